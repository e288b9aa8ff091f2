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

"""The running agent heals drift by itself, and touches nothing foreign.

Drift is injected with plain ip, ethtool and ovs-vsctl commands while a
real vifagent-agent runs. With a resync interval of an hour, every repair
here is event-driven.
"""

import shutil
import time
import uuid

from tests.functional import agent_fixture
from tests.functional import base
from vifagent import binding as binding_mod
from vifagent.rpc import client as client_mod

REPAIR_TIMEOUT = 10


class HealingTestCase(base.RootTestCase):

    agent_options = {'resync_interval': 3600}

    def setUp(self):
        super().setUp()
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            **self.agent_options))
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client

    def bind(self, **fields):
        data = self.binding_dict(netns=self.make_netns(), mtu=1450,
                                 **fields)
        reply = self.client.bind_port(data)
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        b = binding_mod.Binding.from_dict(data)
        return b, reply

    def repairs(self):
        state = self.client.get_agent_state()['reconcile']
        return sum(state['repairs'].values())

    def problems(self, b, reply):
        return base.chain_problems(b, b.devices.tap, reply['vlan'],
                                   self.agent.bridge, self.agent.host)

    def wait_healthy(self, b, reply, timeout=REPAIR_TIMEOUT):
        """Return seconds until the chain is whole again."""
        started = time.monotonic()
        while True:
            problems = self.problems(b, reply)
            if not problems:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.fail('not repaired after %ss: %s\n%s' % (
                    timeout, problems, self.agent.log()))
            time.sleep(0.02)


class TestEventDrivenRepair(HealingTestCase):

    def test_every_drift_kind_is_repaired(self):
        network = str(uuid.uuid4())
        b, reply = self.bind(network_id=network)
        peer, _ = self.bind(network_id=network)
        base.run(['ip', '-n', b.netns, 'addr', 'add', '10.95.0.1/24', 'dev',
                  'eth0'])
        base.run(['ip', '-n', peer.netns, 'addr', 'add', '10.95.0.2/24',
                  'dev', 'eth0'])
        ping = ['ip', 'netns', 'exec', b.netns, 'ping', '-c', '1', '-W',
                '5', '10.95.0.2']
        base.run(ping)
        n = b.devices
        other_bridge = 'qbx' + uuid.uuid4().hex[:11]
        self.addCleanup(base.run, ['ip', 'link', 'del', other_bridge],
                        False)
        base.run(['ip', 'link', 'add', other_bridge, 'type', 'bridge'])
        drifts = {
            'qbr deleted': [['ip', 'link', 'del', n.qbr]],
            'qvb deleted': [['ip', 'link', 'del', n.qvb]],
            'qvo deleted': [['ip', 'link', 'del', n.qvo]],
            'qvo off the switch': [['ovs-vsctl', 'del-port', n.qvo]],
            'tag changed': [['ovs-vsctl', 'set', 'Port', n.qvo, 'tag=99']],
            'tag removed': [['ovs-vsctl', 'clear', 'Port', n.qvo, 'tag']],
            'external_ids changed': [
                ['ovs-vsctl', 'set', 'Interface', n.qvo,
                 'external_ids:iface-id=someone-else']],
            'other_config removed': [
                ['ovs-vsctl', 'remove', 'Port', n.qvo, 'other_config',
                 'net_uuid']],
            'qbr down': [['ip', 'link', 'set', n.qbr, 'down']],
            'qvb down': [['ip', 'link', 'set', n.qvb, 'down']],
            'qvo down': [['ip', 'link', 'set', n.qvo, 'down']],
            'tap down': [['ip', 'link', 'set', n.tap, 'down']],
            'mtu changed': [['ip', 'link', 'set', n.qvb, 'mtu', '1300']],
            'tap mtu changed': [['ip', 'link', 'set', n.tap, 'mtu',
                                 '1280']],
            'qvb out of qbr': [['ip', 'link', 'set', n.qvb, 'nomaster']],
            'tap in another bridge': [['ip', 'link', 'set', n.tap,
                                       'master', other_bridge]],
            'offload on': [['ethtool', '-K', n.qvb, 'tx', 'on']],
            'stp on': [['ip', 'link', 'set', n.qbr, 'type', 'bridge',
                        'stp_state', '1']],
            'alias removed': [['ip', 'link', 'set', n.qbr, 'alias', '']],
        }
        times = {}
        for kind, commands in drifts.items():
            with self.subTest(drift=kind):
                self.assertEqual([], self.problems(b, reply))
                before = self.repairs()
                started = time.monotonic()
                for command in commands:
                    base.run(command)
                # The repair may be done before a check could see the
                # damage: the agent's repair counter proves it happened.
                while self.repairs() == before:
                    self.assertLess(time.monotonic() - started,
                                    REPAIR_TIMEOUT, kind)
                    time.sleep(0.01)
                self.wait_healthy(b, reply)
                times[kind] = time.monotonic() - started
                # Whole is not enough: the repaired chain must forward.
                base.run(ping)
        state = self.client.get_agent_state()
        self.assertEqual(0, state['reconcile']['full_passes'] - 1,
                         'repairs must not need a full pass')
        self.assertTrue(state['reconcile']['repairs'])
        self.assertEqual('ACTIVE',
                         self.client.get_port(b.port_id)['status'])
        # Slowest repair, for the log of this run.
        worst = max(times, key=times.get)
        self.assertLess(times[worst], REPAIR_TIMEOUT, times)

    def test_integration_bridge_deleted(self):
        b, reply = self.bind()
        # The first full pass, at start, created the bridge: one repair.
        state = self.client.get_agent_state()['reconcile']
        self.assertEqual(1, state['repairs'].get('integration_bridge'))
        base.run(['ovs-vsctl', 'del-br', self.agent.bridge])
        self.wait_healthy(b, reply, timeout=20)
        state = self.client.get_agent_state()['reconcile']
        self.assertEqual(2, state['repairs'].get('integration_bridge'))

    def test_foreign_devices_survive(self):
        b, reply = self.bind()
        suffix = uuid.uuid4().hex
        decoy_bridge = 'qbr' + suffix[:11]
        decoy_qvb, decoy_qvo = 'qvb' + suffix[11:22], 'qvo' + suffix[11:22]
        base.run(['ip', 'link', 'add', decoy_bridge, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', decoy_bridge],
                        False)
        # Marked, but for a port this agent never held (another agent's).
        base.run(['ip', 'link', 'add', decoy_qvb, 'type', 'veth', 'peer',
                  'name', decoy_qvo])
        self.addCleanup(base.run, ['ip', 'link', 'del', decoy_qvb], False)
        base.run(['ip', 'link', 'set', decoy_qvb, 'alias',
                  'vifagent:%s' % uuid.uuid4()])
        # An unmarked OVS port with our prefix on our own bridge.
        base.run(['ovs-vsctl', 'add-port', self.agent.bridge, decoy_qvo])
        before = {n: base.link_json(n) for n in
                  (decoy_bridge, decoy_qvb, decoy_qvo)}
        # Full passes (garbage collection included) every second.
        self.assertEqual(0, self.agent.terminate())
        with open(self.agent.config) as f:
            text = f.read().replace('resync_interval = 3600',
                                    'resync_interval = 1')
        with open(self.agent.config, 'w') as f:
            f.write(text)
        self.agent.start()
        deadline = time.monotonic() + 20
        while self.client.get_agent_state()['reconcile'][
                'full_passes'] < 4:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.2)
        for name, link in before.items():
            now = base.link_json(name)
            self.assertIsNotNone(now, name)
            self.assertEqual(link['ifindex'], now['ifindex'], name)
            self.assertEqual(link.get('ifalias'), now.get('ifalias'))
        self.assertEqual(self.agent.bridge, base.run(
            ['ovs-vsctl', 'port-to-br', decoy_qvo]).strip())
        self.assertEqual([], self.problems(b, reply))


class TestPeriodicPass(HealingTestCase):

    agent_options = {'resync_interval': 2}

    def test_drift_without_an_event_is_repaired_by_the_full_pass(self):
        b, reply = self.bind()
        # A sysctl write sends no link notification.
        with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' %
                  b.devices.qbr, 'w') as f:
            f.write('0')
        self.wait_healthy(b, reply, timeout=10)


class TestOrphans(HealingTestCase):

    agent_options = {'resync_interval': 3600, 'orphan_grace': 0}

    def test_chain_left_by_a_lost_store_is_kept_until_a_sync(self):
        """An empty store (state_path not mounted, say) wipes nothing.

        The chain stays while garbage collection waits for the
        controller's full view, which the agent asks for; the sync that
        answers resumes collection, and the chain it does not name goes.
        """
        self.agent.attach_log_on_failure(self)
        b, reply = self.bind()
        resyncs = []
        listener = client_mod.get_report_listener(
            self.agent.transport, self.agent.report_topic,
            'test-' + uuid.uuid4().hex[:8], lambda statuses: None,
            lambda state: None, lambda host, reason: resyncs.append(host))
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)
        self.agent.kill()
        shutil.rmtree(self.agent.dir + '/state')
        self.agent.start()
        self.assertEqual([], self.client.list_ports())
        state = self.client.get_agent_state()
        self.assertIn('the store is new',
                      state['garbage_collection']['suspended'])
        self.assertEqual(0, state['reconcile']['orphans_removed'])
        self.assertEqual([], self.problems(b, reply))
        deadline = time.monotonic() + 20
        while self.agent.host not in resyncs:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        self.client.sync_ports([])
        names = (b.devices.qbr, b.devices.qvb, b.devices.qvo, b.devices.tap)
        deadline = time.monotonic() + 20
        while base.ovs_row('Port', b.devices.qvo, ['name']) is not None or \
                any(base.link_json(name) for name in names) or \
                not self.client.get_agent_state()['reconcile'][
                    'orphans_removed']:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        state = self.client.get_agent_state()
        self.assertIsNone(state['garbage_collection']['suspended'])
        self.assertEqual(1, state['reconcile']['orphans_removed'])
