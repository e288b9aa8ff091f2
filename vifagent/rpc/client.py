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

"""Controller side: a client for the agent's API, and a report listener.

A controller imports these::

    transport = vifagent.rpc.get_transport(cfg.CONF)
    agent = AgentClient(transport, host='compute-1')
    reply = agent.bind_port(binding_dict)

Errors arrive as vifagent.exception classes (InvalidBinding, PortNotFound,
StaleRevision, ...), so callers catch types, not strings.
"""

import oslo_messaging as messaging

from vifagent import rpc

__all__ = [
    'AgentClient',
    'get_report_listener',
]


class AgentClient:
    """Calls one agent (``host``) of API 1.x, pinned with version_cap."""

    def __init__(self, transport, host, topic='vifagent', timeout=None,
                 version_cap=rpc.API_VERSION):
        self.host = host
        # Calls of 1.0 are sent as 1.0, so a client pinned at 1.0 (or an
        # agent that serves only 1.0) still takes them; 1.1 calls ask
        # for 1.1 themselves.
        target = messaging.Target(topic=topic, version='1.0')
        self._client = messaging.get_rpc_client(
            transport, target, version_cap=version_cap, timeout=timeout)

    def _call(self, method, version=None, **kwargs):
        options = {'version': version} if version else {}
        cctxt = self._client.prepare(server=self.host, **options)
        return cctxt.call({}, method, **kwargs)

    def bind_port(self, binding):
        return self._call('bind_port', binding=binding)

    def unbind_port(self, port_id):
        return self._call('unbind_port', port_id=port_id)

    def get_port(self, port_id):
        return self._call('get_port', port_id=port_id)

    def list_ports(self):
        return self._call('list_ports')

    def sync_ports(self, bindings):
        return self._call('sync_ports', bindings=bindings)

    def get_agent_state(self):
        return self._call('get_agent_state')

    # -- 1.1 ---------------------------------------------------------------
    def sync_security_groups(self, groups):
        """Make ``groups`` the complete set of groups the agent holds."""
        return self._call('sync_security_groups', version='1.1',
                          groups=groups)

    def get_security_group(self, security_group_id):
        return self._call('get_security_group', version='1.1',
                          security_group_id=security_group_id)

    def list_security_groups(self):
        return self._call('list_security_groups', version='1.1')

    def security_group_update(self, group):
        """Fanout cast: every agent holding the group updates it."""
        cctxt = self._client.prepare(fanout=True, version='1.1')
        cctxt.cast({}, 'security_group_update', group=group)

    def network_update(self, network_id, mtu):
        """Fanout cast: every agent on the topic updates its ports."""
        cctxt = self._client.prepare(fanout=True)
        cctxt.cast({}, 'network_update', network_id=network_id, mtu=mtu)


class _ReportEndpoint:
    target = messaging.Target(version=rpc.REPORT_VERSION)

    def __init__(self, on_status, on_state, on_resync):
        self.on_status = on_status
        self.on_state = on_state
        self.on_resync = on_resync

    def port_status(self, context, statuses):
        self.on_status(statuses)

    def report_state(self, context, state):
        self.on_state(state)

    def resync_request(self, context, host, reason):
        if self.on_resync is not None:
            self.on_resync(host, reason)


def get_report_listener(transport, topic, name, on_status, on_state,
                        on_resync=None):
    """An RPC server receiving the agents' reports.

    ``on_status(statuses)`` gets port_status casts, ``on_state(state)``
    heartbeats, and ``on_resync(host, reason)`` an agent's request for the
    controller's full view: answer it with ``sync_ports``. ``name`` must
    be unique per listener; agents cast reports as fanout, so every
    listener gets every report.
    """
    target = messaging.Target(topic=topic, server=name,
                              version=rpc.REPORT_VERSION)
    return messaging.get_rpc_server(
        transport, target, [_ReportEndpoint(on_status, on_state, on_resync)])
