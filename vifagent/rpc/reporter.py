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

"""Agent to controller: batched status casts and the heartbeat."""

from oslo_log import log as logging
import oslo_messaging as messaging

from vifagent import rpc

LOG = logging.getLogger(__name__)


class Reporter:
    """Casts reports on ``[agent] report_topic`` as fanout."""

    def __init__(self, transport, conf):
        self.host = conf.host
        target = messaging.Target(topic=conf.agent.report_topic,
                                  version=rpc.REPORT_VERSION)
        self._client = messaging.get_rpc_client(transport, target).prepare(
            fanout=True)

    def port_status(self, changes):
        """Send one cast with every status change of one operation."""
        if not changes:
            return
        statuses = [dict(change, host=self.host) for change in changes]
        try:
            self._client.cast({}, 'port_status', statuses=statuses)
        except messaging.MessagingException as e:
            # The broker may be away; the controller resyncs from
            # list_ports, and the heartbeat carries the counts.
            LOG.warning('Could not report %d status changes: %s',
                        len(statuses), e)

    def report_state(self, state):
        try:
            self._client.cast({}, 'report_state', state=state)
        except messaging.MessagingException as e:
            LOG.warning('Could not send heartbeat: %s', e)
