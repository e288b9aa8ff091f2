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

"""The agent's RPC endpoint: untrusted arguments in, plain dicts out."""

import functools
from importlib import metadata
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from vifagent import binding as binding_mod
from vifagent.conf import agent as agent_conf
from vifagent import exception
from vifagent import metrics
from vifagent import rpc
from vifagent import secgroup as secgroup_mod

LOG = logging.getLogger(__name__)

try:
    VERSION = metadata.version('vifagent')
except metadata.PackageNotFoundError:   # a tree that was never installed
    VERSION = 'unknown'

# Errors the caller is told about; the agent logs no traceback for them
# (a store that cannot write logs its own error once).
_EXPECTED = (exception.InvalidBinding, exception.PortNotFound,
             exception.StaleRevision, exception.VlanPoolExhausted,
             exception.StoreUnavailable, exception.InvalidSecurityGroup,
             exception.SecurityGroupNotFound)


def _counted(method):
    """Count each call by method and result (ok, or the error's class)."""
    @functools.wraps(method)
    def wrapper(self, context, **kwargs):
        try:
            reply = method(self, context, **kwargs)
        except Exception as e:
            metrics.RPC_CALLS.labels(method.__name__,
                                     type(e).__name__).inc()
            raise
        metrics.RPC_CALLS.labels(method.__name__, 'ok').inc()
        return reply
    return wrapper


class AgentEndpoint:
    """Calls of API 1.1: validate every argument, then ask the reconciler.

    Arguments are untrusted: vifagent.binding turns them into typed values
    or raises InvalidBinding before anything is stored or changed.
    """

    target = messaging.Target(version=rpc.API_VERSION)

    def __init__(self, reconciler, conf, extra_state=None):
        self.reconciler = reconciler
        self.default_mtu = conf.agent.default_mtu
        self.netns_allowed = agent_conf.netns_allowed(conf)
        self.started_at = time.time()
        self._identity = {
            'host': conf.host,
            'topic': conf.agent.rpc_topic,
            'api_version': rpc.API_VERSION,
            'version': VERSION,
            'integration_bridge': conf.ovs.integration_bridge,
        }
        self._extra_state = extra_state or dict

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def bind_port(self, context, binding):
        with metrics.BIND_LATENCY.time():
            return self.reconciler.bind(self._binding(binding))

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def unbind_port(self, context, port_id):
        return self.reconciler.unbind(binding_mod.validate_uuid(port_id))

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def get_port(self, context, port_id):
        return self.reconciler.get(binding_mod.validate_uuid(port_id))

    @_counted
    def list_ports(self, context):
        return self.reconciler.list()

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def sync_ports(self, context, bindings):
        return self.reconciler.sync([
            binding_mod.check_netns(b, self.netns_allowed)
            for b in binding_mod.parse_many(bindings, self.default_mtu)])

    @_counted
    def get_agent_state(self, context):
        return self.agent_state()

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def network_update(self, context, network_id, mtu):
        self.reconciler.network_update(
            binding_mod.validate_uuid(network_id, 'network_id'),
            binding_mod.validate_mtu(mtu))

    # -- 1.1: security groups ----------------------------------------------
    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def sync_security_groups(self, context, groups):
        return self.reconciler.sync_groups(secgroup_mod.parse_many(groups))

    @_counted
    def security_group_update(self, context, group):
        # A cast: nobody hears an error, so an invalid group is logged.
        try:
            group = secgroup_mod.SecurityGroup.from_dict(group)
        except exception.InvalidSecurityGroup as e:
            LOG.error('Ignoring invalid security_group_update: %s', e)
            return
        self.reconciler.update_group(group)

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def get_security_group(self, context, security_group_id):
        try:
            group_id = binding_mod.validate_uuid(security_group_id,
                                                 'security_group_id')
        except exception.InvalidBinding as e:
            raise exception.InvalidSecurityGroup(field=e.field,
                                                 reason=e.reason)
        return self.reconciler.get_group(group_id)

    @_counted
    def list_security_groups(self, context):
        return self.reconciler.list_groups()

    def _binding(self, data):
        return binding_mod.check_netns(
            binding_mod.Binding.from_dict(data, self.default_mtu),
            self.netns_allowed)

    def agent_state(self):
        """What get_agent_state and the heartbeat carry; never blocks."""
        state = dict(self._identity, started_at=self.started_at,
                     uptime=round(time.time() - self.started_at, 1))
        state.update(self.reconciler.to_dict())
        state.update(self._extra_state())
        return state


def get_server(transport, endpoint, conf):
    target = messaging.Target(topic=conf.agent.rpc_topic, server=conf.host,
                              version=rpc.API_VERSION)
    return messaging.get_rpc_server(transport, target, [endpoint])
