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

import oslo_messaging as messaging

from vifagent import exception
from vifagent import metrics
from vifagent import rpc

_EXPECTED = (exception.InvalidBinding, exception.PortNotFound,
             exception.StaleRevision, exception.VlanPoolExhausted)


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
    """Calls of API 1.0; each delegates to the Agent after validation.

    The Agent validates every argument through vifagent.binding, so a bad
    request raises a typed error before anything is stored or changed.
    """

    target = messaging.Target(version=rpc.API_VERSION)

    def __init__(self, agent):
        self.agent = agent

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def bind_port(self, context, binding):
        return self.agent.bind_port(binding)

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def unbind_port(self, context, port_id):
        return self.agent.unbind_port(port_id)

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def get_port(self, context, port_id):
        return self.agent.get_port(port_id)

    @_counted
    def list_ports(self, context):
        return self.agent.list_ports()

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def sync_ports(self, context, bindings):
        return self.agent.sync_ports(bindings)

    @_counted
    def get_agent_state(self, context):
        return self.agent.get_agent_state()

    @messaging.expected_exceptions(*_EXPECTED)
    @_counted
    def network_update(self, context, network_id, mtu):
        self.agent.network_update(network_id, mtu)


def get_server(transport, agent, conf):
    target = messaging.Target(topic=conf.agent.rpc_topic, server=conf.host,
                              version=rpc.API_VERSION)
    return messaging.get_rpc_server(transport, target,
                                    [AgentEndpoint(agent)])
