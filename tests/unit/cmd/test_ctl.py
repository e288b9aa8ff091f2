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

"""vifagent-ctl agents: the table row and the --watch events."""

import io

from oslotest import base

from vifagent.cmd import ctl
from vifagent.rpc import registry as registry_mod


def entry(**fields):
    registry = registry_mod.AgentRegistry(90, clock=lambda: 100.0)
    registry.on_state({'host': 'compute-1', 'started_at': 1.0, 'ports': 3,
                       'ports_by_status': {'DOWN': 1, 'ACTIVE': 2},
                       'version': '1.2.3'})
    agent = registry.get('compute-1')
    agent.update(fields)
    return agent


class TestAgentsTable(base.BaseTestCase):

    def test_row(self):
        out = io.StringIO()
        ctl._table(ctl._AGENT_COLUMNS, [ctl._agent_row(entry())], out)
        header, row = out.getvalue().splitlines()
        self.assertEqual(['HOST', 'ALIVE', 'SILENT_FOR', 'PORTS',
                          'BY_STATUS', 'VERSION', 'RESTARTS', 'NEEDS_SYNC'],
                         header.split())
        self.assertEqual(['compute-1', 'alive', '0.0', '3',
                          'ACTIVE=2,DOWN=1', '1.2.3', '0'], row.split())

    def test_dead_and_needing_sync(self):
        row = ctl._agent_row(entry(alive=False, needs_sync=True,
                                   sync_reason='new store'))
        self.assertEqual('DEAD', row[1])
        self.assertEqual('new store', row[-1])


class TestWatchEvents(base.BaseTestCase):

    def test_transitions(self):
        alive, dead = entry(), entry(alive=False)
        self.assertEqual('alive', ctl._agent_event(alive, None))
        self.assertEqual('dead', ctl._agent_event(dead, alive))
        self.assertEqual('alive again', ctl._agent_event(alive, dead))
        self.assertIsNone(ctl._agent_event(alive, alive))
        self.assertEqual('needs a full sync', ctl._agent_event(
            entry(needs_sync=True), alive))
        self.assertEqual('restarted', ctl._agent_event(
            entry(restarts=1), alive))
