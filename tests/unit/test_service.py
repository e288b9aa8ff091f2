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

"""The agent's health: which of its parts /healthz depends on."""

import types

from oslotest import base

from vifagent import service


class FakeMonitor:
    def __init__(self):
        self.up = True

    def healthy(self):
        return self.up


class TestHealth(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.agent = service.Agent(conf=None)
        self.agent.engine = types.SimpleNamespace(
            ovs=types.SimpleNamespace(connected=lambda: True))
        self.agent.reconciler = types.SimpleNamespace(unhealthy=list)
        self.agent.reporter = types.SimpleNamespace(up=True)
        self.agent._server = object()
        self.agent._wire_health()

    def test_healthy_with_every_part_up(self):
        self.agent._monitor = FakeMonitor()
        self.assertEqual([], self.agent.health.problems())

    def test_a_dead_link_monitor_is_reported(self):
        self.agent._monitor = FakeMonitor()
        self.agent._monitor.up = False
        self.assertEqual(['netlink is not connected'],
                         self.agent.health.problems())
        self.assertFalse(self.agent.health.dependencies()['netlink'])

    def test_no_link_monitor_yet_is_reported(self):
        self.assertEqual(['netlink is not connected'],
                         self.agent.health.problems())
