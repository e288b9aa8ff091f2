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

"""End to end: the agent on a three-node RabbitMQ cluster of its own.

README, "Many hosts". One private cluster (``tests.functional.cluster``)
is started for the class and stopped after it; the host's broker is
never touched. Each test runs its own agent (a real vifagent-agent
process given the cluster's multi-host transport_url) and a controller
(the fixture's client and a report listener feeding an AgentRegistry).

* node loss: the node the agent is connected to is SIGKILLed while a
  controller binds ports one after another; both sides fail over, every
  acknowledged binding is kept, a failed call is a MessagingTimeout, the
  heartbeats resume within two report intervals, and the node rejoins
  with nothing doubled;
* a listener frozen (SIGSTOP) while its node is SIGKILLed gets, once
  thawed, the heartbeats cast meanwhile: its queue is a quorum queue and
  outlived the node;
* liveness: an agent silent (SIGSTOP) past agent_down_time is dead in
  the registry and alive once it beats again; vifagent-ctl agents
  (once, and --watch) shows it;
* queues: the agent's topic queues are quorum queues, and a restart
  keeps the same queues (names and count) and exchanges.
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import fixtures
import oslo_messaging as messaging
from testtools import content

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional import cluster as cluster_mod
from tests.functional import tls
from vifagent import rpc
from vifagent.rpc import client as client_mod
from vifagent.rpc import registry as registry_mod

#: Heartbeat period of the agents here.
REPORT_INTERVAL = 5
#: The registry's agent_down_time in these tests.
DOWN_TIME = 3 * REPORT_INTERVAL
#: Timeout of each bind of the stream: a call lost in the switch fails
#: with MessagingTimeout after this.
CALL_TIMEOUT = 15
#: Binds acknowledged after the kill before the stream stops.
AFTER_KILL = 5
#: Hard bound on the stream.
STREAM_FOR = 120


wait_for = tls.wait_for


class Controller:
    """A report listener feeding a registry; heartbeat arrival times."""

    def __init__(self, test, agent, down_time=DOWN_TIME):
        self.registry = registry_mod.AgentRegistry(down_time)
        self.beats = []
        self._lock = threading.Lock()

        def on_state(state):
            with self._lock:
                self.beats.append(time.monotonic())
            self.registry.on_state(state)

        listener = client_mod.get_report_listener(
            agent.transport, agent.report_topic,
            'cluster-%s' % uuid.uuid4().hex[:8], self.registry.on_status,
            on_state, self.registry.on_resync)
        listener.start()
        test.addCleanup(listener.wait)
        test.addCleanup(listener.stop)

    def first_beat_after(self, moment, timeout):
        def beat():
            with self._lock:
                return next((t for t in self.beats if t > moment), None)
        return wait_for(beat, timeout, 'a heartbeat')


class TestCluster(base.RootTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = cluster_mod.RabbitCluster(3)
        cls.cluster.setUp()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanUp()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.addOnException(self._attach_cluster_state)

    def _attach_cluster_state(self, exc_info):
        for i in range(1, self.cluster.nodes + 1):
            path = os.path.join(self.cluster.dir, 'node%d' % i,
                                'server.out')
            self.addDetail('node%d' % i, content.text_content(
                tls.tail(path)))

    def start_agent(self, **options):
        agent = self.useFixture(agent_fixture.AgentFixture(
            report_interval=REPORT_INTERVAL,
            transport_url=self.cluster.url, new_session=True, **options))
        agent.attach_log_on_failure(self)
        self.stop_before_cleanup.append(agent.kill)
        return agent

    def agent_queues(self, agent):
        return {name: q for name, q in self.cluster.queues().items()
                if agent.topic in name}

    def test_node_loss_mid_stream(self):
        agent = self.start_agent()
        controller = Controller(self, agent)
        client = client_mod.AgentClient(agent.transport, agent.host,
                                        topic=agent.topic,
                                        timeout=CALL_TIMEOUT)
        wait_for(lambda: controller.registry.alive(agent.host),
                 2 * REPORT_INTERVAL + 5, 'first heartbeat')
        nodes = self.cluster.nodes_of('vifagent-agent', agent.proc.pid)
        self.assertTrue(nodes, self.cluster.connections())
        victim = nodes[0]
        acked, failed, wrong = {}, [], []
        killed_at = []
        stop = time.monotonic() + STREAM_FOR
        while time.monotonic() < stop:
            if len(acked) == 3 and not killed_at:
                self.cluster.kill(victim)
                killed_at.append(time.monotonic())
            data = self.binding_dict()
            try:
                reply = client.bind_port(data)
            except messaging.MessagingTimeout:
                failed.append(data['port_id'])
                continue
            except Exception as e:
                wrong.append('%s: %s' % (type(e).__name__, e))
                continue
            if reply.get('port_id') != data['port_id'] or \
                    reply.get('status') != 'DOWN':
                wrong.append(repr(reply))
            acked[data['port_id']] = reply
            if killed_at and len(acked) >= 3 + AFTER_KILL:
                break
        self.assertEqual([], wrong)
        self.assertTrue(killed_at)
        self.assertGreaterEqual(len(acked), 3 + AFTER_KILL,
                                'binds after the kill: %d acknowledged, '
                                '%d timed out' % (len(acked) - 3,
                                                  len(failed)))
        # Heartbeats resumed within two intervals of the kill: a beat cast
        # while the controller's listener fails over waits in its (quorum)
        # queue, so the first beat after the kill is at most one interval
        # plus the failover away.
        beat = controller.first_beat_after(killed_at[0],
                                           2 * REPORT_INTERVAL + 30)
        self.assertLessEqual(beat - killed_at[0], 2 * REPORT_INTERVAL,
                             'heartbeats at %s s from the kill' % [
                                 round(t - killed_at[0], 1)
                                 for t in controller.beats])
        # Every acknowledged binding is held; a timed-out one may be.
        held = {p['port_id'] for p in client.list_ports()}
        self.assertEqual(set(), set(acked) - held)
        self.assertEqual(set(), held - set(acked) - set(failed))
        # The node comes back and rejoins; nothing doubles.
        self.cluster.start()
        self.assertEqual(
            sorted(self.cluster.node(i) for i in range(1, 4)),
            self.cluster.running_nodes())
        queues = self.consumed_once(agent)
        self.assertEqual(3, len(queues), queues)
        self.assertEqual(len(held), len(client.list_ports()))

    def test_reports_wait_for_a_listener_whose_node_died(self):
        agent = self.start_agent()
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'watch.json')
        with open(path, 'w') as out:
            watch = subprocess.Popen(
                [agent_fixture.script('vifagent-ctl'), '--config-file',
                 agent.config, '--format', 'json', 'watch', '--duration',
                 str(STREAM_FOR)], stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(watch.wait)
        self.addCleanup(watch.kill)

        def beats():
            """When each heartbeat the watch printed was made (wall)."""
            with open(path) as f:
                lines = [json.loads(line) for line in f
                         if line.startswith('{')]
            return [r['data']['started_at'] + r['data']['uptime']
                    for r in lines if r['type'] == 'report_state' and
                    r['data'].get('host') == agent.host]

        wait_for(beats, 2 * REPORT_INTERVAL + 10, 'a heartbeat in watch')
        nodes = self.cluster.nodes_of('vifagent-ctl', watch.pid)
        self.assertEqual(1, len(nodes), self.cluster.connections())
        # The listener is frozen, then its node (and its queue's home)
        # dies; the agent goes on beating meanwhile.
        watch.send_signal(signal.SIGSTOP)
        self.addCleanup(self._cont, watch)
        self.cluster.kill(nodes[0])
        killed = time.time()
        time.sleep(2 * REPORT_INTERVAL + 3)
        resumed = time.time()
        watch.send_signal(signal.SIGCONT)
        wait_for(lambda: any(t > resumed for t in beats()),
                 3 * REPORT_INTERVAL + 30, 'a heartbeat after SIGCONT')
        # The beats made while the listener was away reached it after.
        made = beats()
        self.assertTrue([t for t in made if killed < t < resumed],
                        'beats made at %s s from the kill, resumed at %.1f'
                        % ([round(t - killed, 1) for t in made],
                           resumed - killed))
        self.cluster.start()
        self.assertEqual(
            sorted(self.cluster.node(i) for i in range(1, 4)),
            self.cluster.running_nodes())

    def consumed_once(self, agent, timeout=30):
        """The agent's queues once each has exactly one consumer."""
        deadline = time.monotonic() + timeout
        while True:
            queues = self.agent_queues(agent)
            if all(q['consumers'] == 1 for q in queues.values()):
                return queues
            if time.monotonic() > deadline:
                raise AssertionError('not one consumer each: %s' % queues)
            time.sleep(0.2)

    def test_silent_agent_is_dead_then_alive(self):
        agent = self.start_agent()
        controller = Controller(self, agent)
        wait_for(lambda: controller.registry.alive(agent.host),
                 2 * REPORT_INTERVAL + 5, 'first heartbeat')
        entry = controller.registry.get(agent.host)
        self.assertEqual(0, entry['ports'])
        self.assertEqual(rpc.API_VERSION, entry['api_version'])
        self.assertTrue(entry['version'])
        agent.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(self._cont, agent)
        stopped = time.monotonic()
        wait_for(lambda: not controller.registry.alive(agent.host),
                 DOWN_TIME + REPORT_INTERVAL + 5, 'dead in the registry')
        self.assertGreaterEqual(time.monotonic() - stopped, DOWN_TIME -
                                REPORT_INTERVAL)
        agent.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: controller.registry.alive(agent.host),
                 2 * REPORT_INTERVAL + 5, 'alive again')
        # The CLI shows the same, from its own listener.
        proc = agent.ctl('agents', '--json', '--listen',
                         str(REPORT_INTERVAL + 1))
        rows = {a['host']: a for a in json.loads(proc.stdout)}
        self.assertTrue(rows[agent.host]['alive'])
        proc = agent.ctl('agents', '--watch', '--duration',
                         str(REPORT_INTERVAL + 1))
        self.assertRegex(proc.stdout, r'(?m)^\S+ %s alive$' % agent.host)

    @staticmethod
    def _cont(proc):
        proc = getattr(proc, 'proc', proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    def test_restart_keeps_the_same_queues(self):
        agent = self.start_agent()
        agent.client.bind_port(self.binding_dict())
        before = self.agent_queues(agent)
        exchanges = {e for e in self.cluster.exchanges()
                     if agent.topic in e}
        topic = agent.topic
        server = '%s.%s' % (agent.topic, agent.host)
        self.assertEqual('quorum', before[topic]['type'])
        self.assertEqual('quorum', before[server]['type'])
        fanout = [n for n in before if n.startswith(topic + '_fanout')]
        self.assertEqual(1, len(fanout), before)
        self.assertEqual('quorum', before[fanout[0]]['type'])
        self.assertIn(['x-expires', 'signedint', 600000],
                      before[fanout[0]]['arguments'])
        self.assertEqual(3, len(before), before)
        self.assertEqual(0, agent.terminate())
        agent.start()
        agent.client.bind_port(self.binding_dict())
        after = self.consumed_once(agent)
        self.assertEqual(sorted(before), sorted(after))
        self.assertEqual(exchanges, {e for e in self.cluster.exchanges()
                                     if agent.topic in e})
