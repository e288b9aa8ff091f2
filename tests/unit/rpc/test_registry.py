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

"""The controller's agent registry: alive, dead, and who needs a sync."""

import time

from oslotest import base

from tests.unit.rpc import test_server
from vifagent.rpc import registry as registry_mod
from vifagent.rpc import reporter as reporter_mod


class Clock:

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def beat(host='compute-1', started_at=1.0, ports=2, **extra):
    state = {'host': host, 'started_at': started_at, 'ports': ports,
             'ports_by_status': {'ACTIVE': ports} if ports else {},
             'version': '1.2.3', 'api_version': '1.0'}
    state.update(extra)
    return state


class TestRegistry(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.clock = Clock()
        self.registry = registry_mod.AgentRegistry(90, clock=self.clock)

    def test_alive_until_down_time_passes_then_dead_until_it_beats(self):
        self.registry.on_state(beat())
        self.clock.now += 90
        self.assertTrue(self.registry.alive('compute-1'))
        self.clock.now += 0.5
        entry = self.registry.get('compute-1')
        self.assertFalse(entry['alive'])
        self.assertEqual(90.5, entry['silent_for'])
        self.registry.on_state(beat())
        self.assertTrue(self.registry.alive('compute-1'))
        self.assertEqual(90.5, self.registry.get('compute-1')[
            'heartbeat_gap'])

    def test_entry_carries_counts_version_and_heartbeats(self):
        self.registry.on_state(beat(ports=3))
        self.clock.now += 30
        self.registry.on_state(beat(ports=4))
        entry = self.registry.get('compute-1')
        self.assertEqual(4, entry['ports'])
        self.assertEqual({'ACTIVE': 4}, entry['ports_by_status'])
        self.assertEqual('1.2.3', entry['version'])
        self.assertEqual(2, entry['heartbeats'])
        self.assertEqual(30, entry['max_heartbeat_gap'])
        self.assertIsNotNone(entry['last_heartbeat'])
        self.assertFalse(entry['needs_sync'])

    def test_status_casts_are_signs_of_life(self):
        self.registry.on_state(beat())
        self.clock.now += 80
        self.registry.on_status([{'port_id': 'x', 'status': 'DOWN',
                                  'reason': None, 'host': 'compute-1'}])
        self.clock.now += 80
        self.assertTrue(self.registry.alive('compute-1'))

    def test_resync_request_flags_until_synced(self):
        self.registry.on_state(beat())
        self.registry.on_resync('compute-1', 'store is new')
        entry = self.registry.get('compute-1')
        self.assertTrue(entry['needs_sync'])
        self.assertEqual('store is new', entry['sync_reason'])
        self.registry.synced('compute-1')
        self.assertFalse(self.registry.get('compute-1')['needs_sync'])

    def test_restart_with_empty_store_is_flagged(self):
        self.registry.on_state(beat(started_at=1.0, ports=5))
        self.registry.on_state(beat(started_at=2.0, ports=0))
        entry = self.registry.get('compute-1')
        self.assertEqual(1, entry['restarts'])
        self.assertTrue(entry['needs_sync'])
        self.assertIn('no ports', entry['sync_reason'])

    def test_restart_keeping_its_ports_is_not_flagged(self):
        self.registry.on_state(beat(started_at=1.0, ports=5))
        self.registry.on_state(beat(started_at=2.0, ports=5))
        entry = self.registry.get('compute-1')
        self.assertEqual(1, entry['restarts'])
        self.assertFalse(entry['needs_sync'])

    def test_malformed_reports_are_ignored(self):
        self.registry.on_state({'ports': 1})
        self.registry.on_state('junk')
        self.registry.on_status([{'status': 'DOWN'}, 'junk', {'host': 7}])
        self.registry.on_resync(None, 'x')
        self.assertEqual([], self.registry.agents())

    def test_agents_sorted_by_host(self):
        for host in ('c', 'a', 'b'):
            self.registry.on_state(beat(host=host))
        self.assertEqual(['a', 'b', 'c'],
                         [a['host'] for a in self.registry.agents()])


class TestDownTimeOption(test_server.Base):

    def test_default_is_three_heartbeats(self):
        self.conf.set_override('report_interval', 7, 'agent')
        self.assertEqual(21, registry_mod.agent_down_time(self.conf))

    def test_set_explicitly(self):
        self.conf.set_override('agent_down_time', 50, 'agent')
        self.assertEqual(50, registry_mod.agent_down_time(self.conf))


class TestRegistryOverTheBus(test_server.Base):
    """A real reporter and a registry's listener on the fake transport."""

    def test_reporter_feeds_the_registry(self):
        registry = registry_mod.AgentRegistry(3)
        listener = registry.listener(self.transport,
                                     self.conf.agent.report_topic, 'ctl')
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)
        self.conf.set_override('report_interval', 1, 'agent')
        reporter = reporter_mod.Reporter(
            self.transport, self.conf, self.rec.status,
            lambda: beat(host=self.conf.host, ports=0))
        reporter.start()
        self.addCleanup(reporter.stop)
        self.rec.status.request_resync('new store')
        deadline = time.monotonic() + 10
        while not (registry.alive(self.conf.host) and
                   registry.get(self.conf.host)['needs_sync'] and
                   registry.get(self.conf.host)['heartbeats']):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        self.assertEqual('new store',
                         registry.get(self.conf.host)['sync_reason'])
