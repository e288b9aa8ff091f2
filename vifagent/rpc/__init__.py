# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""The agent's RPC API: versions, transport, and the calls' names.

API history:

* 1.0 - bind_port, unbind_port, get_port, list_ports, sync_ports,
  get_agent_state; fanout cast network_update. Reports (agent to
  controller): casts port_status and report_state.
* 1.1 - port security: bindings may carry port_security_enabled,
  fixed_ips, allowed_address_pairs and security_groups; calls
  sync_security_groups, get_security_group, list_security_groups and the
  fanout cast security_group_update. 1.0 clients keep working.
* reports 1.1 - cast resync_request(host, reason): the agent needs the
  controller's full view (a sync_ports). port_status and report_state
  are still sent as 1.0, so 1.0 listeners keep working.
"""

from oslo_concurrency import lockutils
from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_messaging import opts as messaging_opts

__all__ = [
    'API_VERSION',
    'REPORT_VERSION',
    'ALLOWED_EXMODS',
    'get_transport',
    'set_agent_defaults',
    'set_defaults',
]

API_VERSION = '1.1'
REPORT_VERSION = '1.1'
ALLOWED_EXMODS = ['vifagent.exception']

LOG = logging.getLogger(__name__)

_RABBIT = 'oslo_messaging_rabbit'
#: Seconds an unused transient queue (the agent's fanout queue) lives.
TRANSIENT_QUEUE_TTL = 600
#: Most seconds added at random to each reconnection attempt.
RECONNECT_SPLAY = 2.0
#: Queue-manager process name: fixed, whatever started the agent.
PROCESS_NAME = 'vifagent-agent'


def broker_count(conf, url=None):
    """How many brokers the transport URL names (0: none)."""
    url = url or conf.transport_url
    if not url:
        return 0
    return len(messaging.TransportURL.parse(conf, url).hosts)


def _register(conf):
    """Register oslo.messaging's options; the rabbit driver's names."""
    names = set()
    for group, opts in messaging_opts.list_opts():
        if group in (None, _RABBIT):   # transport_url; the driver's
            conf.register_opts(opts, group=group)
        if group == _RABBIT:
            names.update(opt.dest for opt in opts)
    return names


def set_defaults(conf, url=None):
    """Defaults every side (agent, controller, vifagent-ctl) shares.

    On a cluster (a transport URL naming several brokers) every queue is
    a quorum queue, replicated by RabbitMQ, and a connection fails over
    to a node drawn at random; on a single broker, oslo.messaging's
    defaults (classic queues):

    * ``rabbit_quorum_queue``: the topic queues, so calls queued for an
      agent survive the loss of a node;
    * ``rabbit_transient_quorum_queue``: the fanout and reply queues, so
      a report cast while a listener fails over waits in the listener's
      queue (a classic one lived on the lost node, and what reached the
      exchange before the listener declared it again was dropped: a
      heartbeat lost, the next one an interval later), and so do a
      ``network_update`` for an agent and a reply for a controller;
    * ``kombu_failover_strategy`` ``shuffle``: in round robin a
      listener that lost its node switches host three times per retry
      (oslo.messaging's consume loop, kombu's retry, kombu's connect),
      which on a 3-node cluster brings it back to the dead node each
      time, for as many retries as its poll timer takes to grow past a
      second: up to about ten for a busy listener.

    Quorum queues need durable exchanges and RabbitMQ refuses to
    redeclare an exchange with another durability, so agents and
    controllers must agree: the defaults depend on the URL only, and a
    config file that sets one must set it on every side.
    """
    _register(conf)
    cluster = broker_count(conf, url) > 1
    conf.set_default('rabbit_quorum_queue', cluster, group=_RABBIT)
    conf.set_default('rabbit_transient_quorum_queue', cluster,
                     group=_RABBIT)
    conf.set_default('kombu_failover_strategy',
                     'shuffle' if cluster else 'round-robin', group=_RABBIT)


def set_agent_defaults(conf):
    """Broker-friendly defaults for the agent; a config file overrides them.

    Each agent multiplies what it asks of the broker by the fleet, so, on
    top of ``set_defaults``:

    * ``use_queue_manager``: the fanout queue keeps its name across
      restarts (``<topic>_fanout_<host>:vifagent-agent:1``), reused, not
      deleted and declared anew, and network updates cast meanwhile wait
      in it; its name derives from ``[DEFAULT] host`` (not the machine's
      name), so agents sharing a machine never share a queue;
    * ``rabbit_transient_queues_ttl``: a fanout queue nobody consumes
      goes after ``TRANSIENT_QUEUE_TTL`` seconds (a host removed for
      good leaves nothing behind);
    * ``kombu_reconnect_splay``: a random wait of up to
      ``RECONNECT_SPLAY`` seconds before each reconnection, so a fleet
      that lost its node does not come back to the next in one burst.

    Call it before ``get_transport``.
    """
    set_defaults(conf)
    names = _register(conf)
    defaults = {
        'use_queue_manager': True,
        'hostname': conf.host,
        'processname': PROCESS_NAME,
        'rabbit_transient_queues_ttl': TRANSIENT_QUEUE_TTL,
        'kombu_reconnect_splay': RECONNECT_SPLAY,
    }
    if 'use_queue_manager' not in names:
        # An oslo.messaging older than 14.7 has no queue manager.
        LOG.info('oslo.messaging has no use_queue_manager: the fanout '
                 'queue is named anew at each start')
    for name, value in defaults.items():
        if name in names:
            conf.set_default(name, value, group=_RABBIT)
    # The queue manager counts its queues under an inter-process lock.
    if 'use_queue_manager' in names and not lockutils.get_lock_path(conf):
        conf.set_default('lock_path', conf.agent.state_path,
                         group='oslo_concurrency')


def get_transport(conf, url=None):
    """A transport that rebuilds vifagent's typed errors on the caller.

    It applies ``set_defaults`` first, so every side agrees on queue
    types for the same broker URL.
    """
    set_defaults(conf, url)
    return messaging.get_rpc_transport(conf, url=url,
                                       allowed_remote_exmods=ALLOWED_EXMODS)
