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
* reports 1.1 - cast resync_request(host, reason): the agent needs the
  controller's full view (a sync_ports). port_status and report_state
  are still sent as 1.0, so 1.0 listeners keep working.
"""

import oslo_messaging as messaging

__all__ = [
    'API_VERSION',
    'REPORT_VERSION',
    'ALLOWED_EXMODS',
    'get_transport',
]

API_VERSION = '1.0'
REPORT_VERSION = '1.1'
ALLOWED_EXMODS = ['vifagent.exception']


def get_transport(conf, url=None):
    """A transport that rebuilds vifagent's typed errors on the caller."""
    return messaging.get_rpc_transport(conf, url=url,
                                       allowed_remote_exmods=ALLOWED_EXMODS)
