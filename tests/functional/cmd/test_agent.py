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

"""End to end: vifagent-agent as a real process, driven over RabbitMQ."""

import json
import os
import subprocess
import time
import uuid

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional.reconcile import test_apply
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.rpc import client as client_mod


def chain_names(port_id):
    d = binding_mod.device_names(port_id.lower())
    return [d.qbr, d.qvb, d.qvo, d.tap]


class AgentTestCase(base.RootTestCase):

    report_interval = 30

    def setUp(self):
        super().setUp()
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            report_interval=self.report_interval))
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client

    def bind(self, **fields):
        data = self.binding_dict(netns=self.make_netns(), **fields)
        return data, self.client.bind_port(data)

    def assertNoDevices(self, port_id):
        for name in chain_names(port_id):
            self.assertIsNone(base.link_json(name), name)
        self.assertIsNone(base.ovs_row('Port', chain_names(port_id)[2],
                                       ['name']))


class TestAgentApi(AgentTestCase):

    def test_bind_show_list_unbind(self):
        data, reply = self.bind(mtu=1450)
        pid = data['port_id']
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        self.assertEqual(pid, reply['port_id'])
        self.assertEqual(1, reply['vlan'])
        self.assertEqual(0, reply['revision'])
        names = binding_mod.device_names(pid)
        self.assertEqual({'tap': names.tap, 'qbr': names.qbr,
                          'qvb': names.qvb, 'qvo': names.qvo},
                         reply['devices'])
        self.assertEqual(1450, base.link_json(names.qvb)['mtu'])
        self.assertEqual(reply, self.client.get_port(pid))
        self.assertEqual([reply], self.client.list_ports())
        state = self.client.get_agent_state()
        self.assertEqual(1, state['ports_by_status']['ACTIVE'])
        gone = self.client.unbind_port(pid)
        self.assertTrue(gone['was_bound'])
        self.assertNoDevices(pid)
        self.assertRaises(exception.PortNotFound, self.client.get_port, pid)
        # Unbinding again, or an id never seen, is not an error.
        self.assertFalse(self.client.unbind_port(pid)['was_bound'])
        self.assertFalse(
            self.client.unbind_port(str(uuid.uuid4()))['was_bound'])

    def test_revisions(self):
        data, reply = self.bind(revision=3)
        same = self.client.bind_port(data)
        self.assertEqual(reply, same)
        newer = dict(data, revision=4, mtu=1400)
        self.assertEqual(4, self.client.bind_port(newer)['revision'])
        older = dict(data, revision=2, mtu=9000)
        self.assertRaises(exception.StaleRevision, self.client.bind_port,
                          older)
        port = self.client.get_port(data['port_id'])
        self.assertEqual((4, 1400), (port['revision'], port['mtu']))

    def test_sync_adds_updates_removes(self):
        netns = [self.make_netns() for _ in range(3)]
        a, b, c = (self.binding_dict(netns=n) for n in netns)
        first = self.client.sync_ports([a, b])
        self.assertCountEqual([a['port_id'], b['port_id']], first['added'])
        self.assertEqual(['ACTIVE', 'ACTIVE'],
                         [p['status'] for p in first['ports']])
        b2 = dict(b, revision=1, mtu=1300)
        second = self.client.sync_ports([b2, c])
        self.assertEqual([c['port_id']], second['added'])
        self.assertEqual([b['port_id']], second['updated'])
        self.assertEqual([a['port_id']], second['removed'])
        self.assertNoDevices(a['port_id'])
        qvb = binding_mod.device_names(b['port_id']).qvb
        self.assertEqual(1300, base.link_json(qvb)['mtu'])
        self.assertCountEqual([b['port_id'], c['port_id']],
                              [p['port_id'] for p in
                               self.client.list_ports()])
        self.assertEqual([], self.client.sync_ports([])['added'])
        self.assertEqual([], self.client.list_ports())
        self.assertNoDevices(b['port_id'])

    def test_network_update_fanout(self):
        net = str(uuid.uuid4())
        data, _ = self.bind(network_id=net)
        self.client.network_update(net, 1280)
        qvb = binding_mod.device_names(data['port_id']).qvb
        deadline = time.monotonic() + 20
        while base.link_json(qvb)['mtu'] != 1280:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        self.assertEqual(1280, self.client.get_port(data['port_id'])['mtu'])


BAD_BINDINGS = [
    ('port_id', {'port_id': 'not-a-uuid'}),
    ('mac_address', {'mac_address': '01:00:5e:00:00:01'}),
    ('mac_address', {'mac_address': 'fe:16:3e:00:00:01'}),
    ('mtu', {'mtu': 67}),
    ('mtu', {'mtu': 70000}),
    ('mtu', {'mtu': '1500'}),
    ('admin_state_up', {'admin_state_up': 'no'}),
    ('revision', {'revision': -1}),
    ('surprise', {'surprise': True}),
    ('network_id', {'network_id': 'x' * 100000}),
    ('netns', {'vif_type': 'netns', 'netns': '../../etc'}),
]


class TestBadInput(AgentTestCase):

    def test_every_bad_binding_is_typed_and_harmless(self):
        for field, change in BAD_BINDINGS:
            with self.subTest(field=field):
                data = self.binding_dict(**change)
                e = self.assertRaises(exception.InvalidBinding,
                                      self.client.bind_port, data)
                self.assertIn(repr(field), str(e))
                pid = data['port_id']
                if binding_mod._UUID_RE.match(str(pid)):
                    self.assertNoDevices(pid)
        for value in (None, 'binding', [1, 2], 42):
            self.assertRaises(exception.InvalidBinding,
                              self.client.bind_port, value)
        for port_id in ('nope', 7, None, ['x'], 'a' * 10000):
            self.assertRaises(exception.InvalidBinding,
                              self.client.get_port, port_id)
            self.assertRaises(exception.InvalidBinding,
                              self.client.unbind_port, port_id)
        self.assertEqual([], self.client.list_ports())
        self.assertEqual(0, self.client.get_agent_state()['ports'])

    def test_one_bad_binding_rejects_the_whole_sync(self):
        good = self.binding_dict(netns=self.make_netns())
        bad = self.binding_dict(mtu=1)
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          [good, bad])
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          {'not': 'a list'})
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          [good, good])
        self.assertEqual([], self.client.list_ports())
        self.assertNoDevices(good['port_id'])

    def test_agent_keeps_serving(self):
        for _ in range(3):
            self.assertRaises(exception.InvalidBinding,
                              self.client.bind_port, {'port_id': 1})
        _, reply = self.bind()
        self.assertEqual('ACTIVE', reply['status'])


class TestCli(AgentTestCase):

    def test_bind_show_list_status_unbind(self):
        data = self.binding_dict(netns=self.make_netns())
        out = self.agent.ctl('--format', 'json', 'bind', '--json',
                             json.dumps(data)).stdout
        self.assertEqual('ACTIVE', json.loads(out)['status'])
        table = self.agent.ctl('show', data['port_id']).stdout
        self.assertIn('ACTIVE', table)
        self.assertIn(binding_mod.device_names(data['port_id']).qbr, table)
        listed = json.loads(self.agent.ctl('--format', 'json',
                                           'list').stdout)
        self.assertEqual([data['port_id']], [p['port_id'] for p in listed])
        status = json.loads(self.agent.ctl('--format', 'json',
                                           'status').stdout)
        self.assertEqual(self.agent.host, status['host'])
        self.agent.ctl('unbind', data['port_id'])
        self.assertNoDevices(data['port_id'])

    def test_bind_from_options_and_sync_file(self):
        netns = self.make_netns()
        data = self.binding_dict(netns=netns)
        out = self.agent.ctl(
            '--format', 'json', 'bind', '--port-id', data['port_id'],
            '--mac-address', data['mac_address'], '--instance-uuid',
            data['instance_uuid'], '--network-id', data['network_id'],
            '--netns', netns, '--mtu', '1400').stdout
        self.assertEqual(1400, json.loads(out)['mtu'])
        path = os.path.join(self.agent.dir, 'sync.json')
        with open(path, 'w') as f:
            json.dump([], f)
        out = self.agent.ctl('--format', 'json', 'sync', path).stdout
        self.assertEqual([data['port_id']], json.loads(out)['removed'])

    def test_errors_are_typed_and_non_zero(self):
        proc = self.agent.ctl('bind', '--json', '{"port_id": "x"}',
                              check=False)
        self.assertEqual(2, proc.returncode)
        self.assertIn('error: InvalidBinding', proc.stderr)
        proc = self.agent.ctl('show', str(uuid.uuid4()), check=False)
        self.assertEqual(2, proc.returncode)
        self.assertIn('error: PortNotFound', proc.stderr)
        proc = self.agent.ctl('--host', 'no-such-agent', '--timeout', '2',
                              'status', check=False)
        self.assertEqual(1, proc.returncode)
        self.assertIn('no reply', proc.stderr)


class TestWatch(AgentTestCase):

    report_interval = 1

    def test_watch_prints_status_and_heartbeats(self):
        watch = subprocess.Popen(
            [agent_fixture.script('vifagent-ctl'), '--config-file',
             self.agent.config, '--format', 'json', 'watch',
             '--duration', '60'], stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        # The first heartbeat shows the listener is subscribed.
        kinds = set()
        while 'report_state' not in kinds:
            kinds.add(json.loads(watch.stdout.readline())['type'])
        data, _ = self.bind()
        seen = []
        while (data['port_id'], 'ACTIVE', self.agent.host) not in seen:
            message = json.loads(watch.stdout.readline())
            if message['type'] == 'port_status':
                seen += [(s['port_id'], s['status'], s['host'])
                         for s in message['data']]


class TestRestartReportsNothing(AgentTestCase):

    report_interval = 1

    def test_no_status_casts_when_a_healthy_host_restarts(self):
        self.bind()
        watch = subprocess.Popen(
            [agent_fixture.script('vifagent-ctl'), '--config-file',
             self.agent.config, '--format', 'json', 'watch',
             '--duration', '60'], stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        messages = [json.loads(watch.stdout.readline())]
        while messages[-1]['type'] != 'report_state':
            messages.append(json.loads(watch.stdout.readline()))
        self.assertEqual(0, self.agent.terminate())
        restarted = time.time()
        self.agent.start()
        beats = 0
        while beats < 2:
            message = json.loads(watch.stdout.readline())
            messages.append(message)
            if message['type'] == 'report_state' and \
                    message['data']['started_at'] > restarted:
                beats += 1
        self.assertEqual([], [m for m in messages
                              if m['type'] == 'port_status'])


class TestRestart(AgentTestCase):

    def test_kill_9_after_reply_loses_nothing(self):
        data, reply = self.bind()
        self.agent.kill()
        indexes = {n: base.link_json(n)['ifindex']
                   for n in chain_names(data['port_id'])}
        self.agent.start()
        self.assertEqual(reply, self.client.get_port(data['port_id']))
        self.assertEqual(indexes, {n: base.link_json(n)['ifindex']
                                   for n in chain_names(data['port_id'])})

    def test_restart_with_live_chains_changes_nothing(self):
        net = str(uuid.uuid4())
        a, _ = self.bind(network_id=net)
        b, _ = self.bind(network_id=net)
        base.run(['ip', '-n', a['netns'], 'addr', 'add', '10.97.0.1/24',
                  'dev', 'eth0'])
        base.run(['ip', '-n', b['netns'], 'addr', 'add', '10.97.0.2/24',
                  'dev', 'eth0'])
        base.run(['ip', 'netns', 'exec', a['netns'], 'ping', '-c', '1',
                  '-W', '5', '10.97.0.2'])
        names = chain_names(a['port_id']) + chain_names(b['port_id'])
        events = test_apply.LinkEvents(names)
        self.addCleanup(events.close)
        # A count, not a deadline (-w): at a deadline the packet in
        # flight is counted lost; with -c every reply is waited for.
        ping = subprocess.Popen(
            ['ip', 'netns', 'exec', a['netns'], 'ping', '-q', '-i', '0.05',
             '-c', '240', '-W', '5', '10.97.0.2'], stdout=subprocess.PIPE,
            text=True)
        self.addCleanup(ping.kill)
        time.sleep(1)
        started = time.monotonic()
        self.assertEqual(0, self.agent.terminate())
        self.assertLess(time.monotonic() - started, 10)
        self.agent.start()
        self.assertEqual(2, self.client.get_agent_state()[
            'ports_by_status']['ACTIVE'])
        out, _ = ping.communicate(timeout=30)
        self.assertIn(' 0% packet loss', out)
        self.assertEqual([], events.collect())


class TestLauncherGone(AgentTestCase):

    def test_serves_after_its_launcher_exited(self):
        """Started by a script that exits at once, the agent still serves.

        The script led the agent's process group; oslo.messaging's queue
        manager reads the group leader's /proc entry on every queue it
        names, so an agent left in a leaderless group never served RPC.
        """
        self.agent.kill()
        launcher = subprocess.run(
            ['sh', '-c', '"$0" --config-file "$1" >/dev/null 2>&1 & echo $!',
             agent_fixture.script('vifagent-agent'), self.agent.config],
            start_new_session=True, capture_output=True, text=True,
            check=True)
        pid = int(launcher.stdout)
        self.addCleanup(subprocess.run, ['kill', '-9', str(pid)])
        client = client_mod.AgentClient(self.agent.transport,
                                        self.agent.host,
                                        topic=self.agent.topic, timeout=2)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.get_agent_state()
                break
            except exception.VifAgentException:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    self.fail('no answer:\n' + self.agent.log())
        self.assertEqual(pid, os.getpgid(pid))
