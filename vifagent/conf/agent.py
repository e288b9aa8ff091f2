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

"""Options of the [agent] group."""

from oslo_config import cfg

GROUP = cfg.OptGroup('agent', title='Agent options')

agent_opts = [
    cfg.StrOpt(
        'state_path', default='/var/lib/vifagent',
        help='Directory of the agent\'s SQLite store of bindings and local '
             'VLAN allocations.'),
    cfg.StrOpt(
        'rpc_topic', default='vifagent',
        help='RPC topic the agent serves; its server name is [DEFAULT] '
             'host.'),
    cfg.StrOpt(
        'report_topic', default='vifagent-reports',
        help='Topic of the agent\'s status casts (port_status) and '
             'heartbeats (report_state), sent as fanout so that every '
             'listener sees them.'),
    cfg.IntOpt(
        'report_interval', default=30, min=1,
        help='Seconds between report_state heartbeats.'),
    cfg.IntOpt(
        'agent_down_time', min=1,
        help='Seconds without any report from an agent after which the '
             'controller side (vifagent.rpc.registry, vifagent-ctl '
             'agents) counts it dead. Unset: 3 x report_interval. Set it '
             'on the controller to the agents\' report_interval times '
             'the heartbeats it may miss.'),
    cfg.FloatOpt(
        'report_retry_cap', default=5.0, min=0.1,
        help='Longest wait in seconds between two attempts to send a '
             'report the broker did not take. Reports are sent by their '
             'own thread and never hold up repairs; while the broker is '
             'away the latest status of each port is kept and sent once '
             'it is back.'),
    cfg.IntOpt(
        'report_replay_window', default=90, min=0,
        help='Seconds after the broker came back from an outage during '
             'which every heartbeat is preceded by the latest status of '
             'each port that changed during the outage or since. A '
             'restarted broker has lost the controller\'s report queue, '
             'and a controller that reconnects later than the agent would '
             'otherwise never hear those statuses. 0 turns this off.'),
    cfg.IntOpt(
        'netlink_rcvbuf', default=4 << 20, min=4096,
        help='Receive buffer, in bytes, of the socket on which the agent '
             'hears link events (set past net.core.rmem_max). When a burst '
             'of events overflows it some are lost, and a full pass looks '
             'at everything again; a bigger buffer makes that rarer.'),
    cfg.IntOpt(
        'resync_interval', default=60, min=1,
        help='Seconds between full reconciliation passes (with 10% '
             'jitter). Events repair drift at once; the full pass catches '
             'what no event reports and collects orphans.'),
    cfg.IntOpt(
        'orphan_grace', default=60, min=0,
        help='Seconds an orphan (a chain this agent owns with no binding) '
             'is left alone before a full pass removes it.'),
    cfg.IntOpt(
        'max_orphan_removals', default=50, min=1,
        help='Most orphaned chains one full pass removes; the rest wait '
             'for the next pass (a log line and the metric '
             'vifagent_gc_deferred say how many). A bound on what a '
             'wrong view of the host can destroy at once.'),
    cfg.IntOpt(
        'max_retries', default=5, min=0,
        help='Retries of a failing port (backoff 0.5 s doubling, capped by '
             'retry_backoff_cap) before it stays in ERROR until the next '
             'full pass.'),
    cfg.FloatOpt(
        'retry_backoff_cap', default=30.0, min=0.1,
        help='Longest wait in seconds between two retries of a port.'),
    cfg.BoolOpt(
        'netns_ports', default=False,
        help='Accept vif_type=netns bindings, whose tap the agent makes '
             'itself with its peer in a network namespace (containers, '
             'tests, demos). Off, such a binding is refused and the '
             'privileged daemon holding CAP_SYS_ADMIN never starts.'),
    cfg.ListOpt(
        'netns_allowed', default=['vifagent-*'],
        help='Shell patterns one of which a netns binding\'s namespace '
             'name must match, so that no caller can put an interface '
             'into another service\'s namespace (qrouter-, qdhcp-...).'),
    cfg.FloatOpt(
        'privsep_timeout', default=30.0, min=1.0,
        help='Seconds the privileged daemon may take over a batch of kernel '
             'writes before it is taken for hung, plus 10 ms per operation '
             'and 50 ms per deleted device, so a large batch is never cut '
             'short. A hung daemon is killed and a new one started; the '
             'ports of the batch are ERROR until a retry succeeds.'),
    cfg.IntOpt(
        'default_mtu', default=1500, min=68, max=65535,
        help='MTU of a port whose binding does not name one.'),
]


def netns_allowed(conf):
    """The namespace patterns netns ports may use, or None when off."""
    return conf.agent.netns_allowed if conf.agent.netns_ports else None


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(agent_opts, group=GROUP)


def list_opts():
    return {GROUP: agent_opts}
