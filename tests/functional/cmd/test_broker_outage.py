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

"""End to end: the agent while RabbitMQ is away, and reads during a plug.

Nothing in the agent may wait for the broker (README, "Reconciliation"
and "Metrics and health"): chains are repaired while it is away, /healthz
says RPC is down, SIGTERM still stops the agent, and once the broker is
back the agent answers calls, heartbeats again and tells the controller
the latest status of each port that changed meanwhile, without a restart.

The broker is taken away from one agent only: each agent reaches
RabbitMQ through a relay of its own (``AgentFixture(broker_proxy=True)``)
and the tests cut that relay. The test's client and report listener
connect to RabbitMQ directly, as a controller would, and the shared
broker is never stopped, so these tests run beside any other.

The last test holds a plug inside its OVSDB transaction (the agent's
OVSDB connection goes through a relay that stops relaying) and checks
that reads, which come from the store and a snapshot, answer meanwhile.
"""

import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid

import fixtures
from prometheus_client import parser
from testtools import content

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional import proxy as proxy_mod
from vifagent import binding as binding_mod
from vifagent.rpc import client as client_mod

#: Hard bound on each test, whatever it waits for.
TEST_TIMEOUT = 240
#: Heartbeat period of the agents here: a failing heartbeat is what tells
#: the agent the broker is away, so health must follow within a few.
REPORT_INTERVAL = 2
#: After the cut, /healthz must say RPC is down within this.
HEALTH_DOWN_WITHIN = 20
#: A chain broken while the broker is away is whole again within this.
REPAIR_WITHIN = 1.0
#: After the relay is restored, a call must succeed within this (the
#: agent's reconnection backs off, up to oslo.messaging's 30 s).
CALL_BACK_WITHIN = 60
#: SIGTERM to exit, broker away.
EXIT_WITHIN = 10
#: A read while a plug is held in OVSDB.
READ_WITHIN = 0.1
#: How long reads are measured while the plug is held; well under the
#: 5 s inactivity probe of ovsdb-server, which would drop the session.
HOLD_FOR = 1.5
#: Rounds of the three reads, spread over that time.
ROUNDS = 5


def wait_for(predicate, timeout, what, interval=0.05):
    """Poll ``predicate`` until it returns a true value.

    Returns ``(value, seconds)``: the value and the time from the call to
    the end of the probe that succeeded (an upper bound).
    """
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError('%s: not within %.1f s' % (what, timeout))
        time.sleep(interval)


def health(url):
    """``(status, body)`` of /healthz, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url + 'healthz', timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (urllib.error.URLError, OSError):
        return None


def samples(url):
    """``{(name, labels...): value}`` of one /metrics scrape."""
    with urllib.request.urlopen(url + 'metrics', timeout=5) as r:
        text = r.read().decode()
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name,) + tuple(sorted(sample.labels.items()))
            found[key] = sample.value
    return found


def rpc_up(url):
    return samples(url)[('vifagent_dependency_up', ('dependency', 'rpc'))]


class Reports:
    """A controller's report listener, connected to RabbitMQ directly.

    Records every port_status and report_state with the time it arrived
    (time.monotonic()), so a test can ask what came after a moment.
    """

    def __init__(self, test, agent):
        self.statuses = []
        self.beats = []
        self._lock = threading.Lock()
        listener = client_mod.get_report_listener(
            agent.transport, agent.report_topic,
            'broker-outage-%s' % uuid.uuid4().hex[:8],
            self._on_status, self._on_state)
        listener.start()
        test.addCleanup(listener.wait)
        test.addCleanup(listener.stop)

    def _on_status(self, statuses):
        now = time.monotonic()
        with self._lock:
            self.statuses += [(now, s) for s in statuses]

    def _on_state(self, state):
        with self._lock:
            self.beats.append((time.monotonic(), state))

    def beats_after(self, moment, timeout, count=1):
        """The first ``count`` heartbeats that arrived after ``moment``."""
        def beats():
            with self._lock:
                found = [s for t, s in self.beats if t > moment]
            return found[:count] if len(found) >= count else None
        return wait_for(beats, timeout, '%d heartbeats' % count)[0]

    def of(self, port_id, after=0.0):
        """The statuses of ``port_id`` that arrived after ``after``."""
        with self._lock:
            return [s for t, s in self.statuses
                    if t > after and s['port_id'] == port_id]


class AgentTestCase(base.RootTestCase):
    """A bounded test with a real agent; its log attached on failure."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.Timeout(TEST_TIMEOUT, gentle=True))
        self._notes = []
        self.addDetail('timings', content.Content(
            content.UTF8_TEXT,
            lambda: ['\n'.join(self._notes).encode('utf-8')]))

    def start_agent(self, **kwargs):
        sections = kwargs.pop('sections', {})
        sections.setdefault('metrics', {}).update(enabled='true',
                                                  bind_port=0)
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            report_interval=REPORT_INTERVAL, sections=sections, **kwargs))
        self.stop_before_cleanup.append(self.agent.kill)
        self.agent.attach_log_on_failure(self)
        self.client = self.agent.client
        # Short calls, for polling an agent that may not answer yet.
        self.quick = client_mod.AgentClient(
            self.agent.transport, self.agent.host, topic=self.agent.topic,
            timeout=2)

    def note(self, fmt, *args):
        """Print a measurement; it is also kept in the test's details."""
        line = '%s: %s' % (self.id().rsplit('.', 1)[-1], fmt % args)
        self._notes.append(line)
        print(line, flush=True)

    def bind(self):
        data = self.binding_dict(netns=self.make_netns())
        reply = self.client.bind_port(data)
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        return data, reply

    def chain_problems(self, data, reply):
        """What is wrong with a port's chain, seen from the kernel and OVS."""
        return base.chain_problems(
            binding_mod.Binding.from_dict(data), reply['devices']['tap'],
            reply['vlan'], self.agent.bridge, self.agent.host)

    def wait_whole(self, data, reply, timeout):
        """Seconds until a check of the whole chain passed (polled)."""
        return wait_for(lambda: not self.chain_problems(data, reply),
                        timeout, 'chain of %s whole' % data['port_id'],
                        interval=0.01)[1]

    def wait_health(self, url, accept, timeout, what):
        """Poll /healthz until ``accept(status, body)``.

        Returns ``((status, body), seconds)``.
        """
        def probe():
            result = health(url)
            return result if result and accept(*result) else None
        return wait_for(probe, timeout, what, interval=0.1)

    def first_call(self, timeout=CALL_BACK_WITHIN):
        """(agent state, seconds until its reply) of the first answer.

        Calls of 2 s are made one after the other; a request the agent
        was not there to take waits in its queue, so the reply comes as
        soon as the agent consumes again.
        """
        def call():
            try:
                return self.quick.get_agent_state()
            except Exception:
                return None
        return wait_for(call, timeout, 'an answered call')


def rpc_down(status, body):
    return status == 503 and 'rpc is not connected' in body['problems']


def rpc_not_down(status, body):
    return 'rpc is not connected' not in body['problems']


class TestOutageWhileRunning(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.start_agent(broker_proxy=True)

    def test_repairs_then_catches_up_without_restart(self):
        """Cut the broker under a running agent with three ports, then back.

        While it is away: port A's VM (its namespace) disappears, which
        turns A to ERROR; C's does too but comes back, so C is ACTIVE
        again, as the controller last heard; B's qbr is deleted, which the
        agent must repair within a second; /healthz says RPC is down.
        Once it is back: calls are answered by the same process,
        heartbeats resume and the controller hears A's latest status and
        nothing stale about C.
        """
        reports = Reports(self, self.agent)
        # The first heartbeat shows the listener is subscribed.
        reports.beats_after(0, timeout=30)
        a, _ = self.bind()
        b, reply_b = self.bind()
        c, _ = self.bind()
        for port in (a, c):
            wait_for(lambda: any(s['status'] == 'ACTIVE'
                                 for s in reports.of(port['port_id'])),
                     30, 'ACTIVE reported')
        before = self.client.get_agent_state()
        url = before['metrics']
        self.wait_health(url, lambda code, body: code == 200, 30, 'healthy')
        self.assertEqual(1, rpc_up(url))

        def counted(status):
            return samples(url)[('vifagent_ports', ('status', status))]

        cut_at = time.monotonic()
        self.agent.broker_proxy.cut()
        (_, body), took = self.wait_health(url, rpc_down,
                                           HEALTH_DOWN_WITHIN,
                                           '/healthz with rpc down')
        self.note('/healthz said rpc down %.2f s after the cut (%s)',
                  took, body['problems'])
        self.assertEqual(0, rpc_up(url))

        # A's and C's "VMs" go away: their taps go with the namespaces.
        base.run(['ip', 'netns', 'del', a['netns']])
        base.run(['ip', 'netns', 'del', c['netns']])
        wait_for(lambda: counted('ERROR') == 2, 10, 'A and C in ERROR')
        # C's comes back: a retry of C wires it again.
        base.run(['ip', 'netns', 'add', c['netns']])
        # B's qbr deleted: netlink events alone must bring it back.
        qbr = binding_mod.device_names(b['port_id']).qbr
        old_qbr = base.link_json(qbr)['ifindex']
        base.run(['ip', 'link', 'del', 'dev', qbr])
        took = self.wait_whole(b, reply_b, REPAIR_WITHIN)
        self.note('B whole again %.3f s after its qbr was deleted', took)
        self.assertLessEqual(took, REPAIR_WITHIN)
        self.assertNotEqual(old_qbr, base.link_json(qbr)['ifindex'])
        wait_for(lambda: counted('ACTIVE') == 2, 20, 'C ACTIVE again')
        self.assertEqual(1, counted('ERROR'))
        # Long enough for the reporter to fail on the new statuses too.
        time.sleep(REPORT_INTERVAL)
        self.assertEqual(503, health(url)[0])

        restored_at = time.monotonic()
        self.agent.broker_proxy.restore()
        state, took = self.first_call()
        self.note('first call answered %.2f s after the relay was '
                  'restored (%.1f s after the cut)', took,
                  restored_at - cut_at)
        self.assertIsNone(self.agent.proc.poll())
        self.assertEqual(before['started_at'], state['started_at'])
        self.assertGreaterEqual(
            state['reconcile']['repairs'].get('qbr_missing', 0), 1)

        latest = self.client.get_port(a['port_id'])
        self.assertEqual('ERROR', latest['status'])
        expected = (latest['status'], latest['reason'])
        # The controller hears A's latest status, and nothing older.
        _, took = wait_for(
            lambda: [(s['status'], s['reason'])
                     for s in reports.of(a['port_id'], cut_at)][-1:] ==
            [expected], 30, 'A reported %s' % (expected,))
        self.note('A reported %s %.2f s after the first call', expected[0],
                  took)
        self.assertEqual({'ERROR'}, {s['status'] for s in
                                     reports.of(a['port_id'], cut_at)})
        self.assertEqual(self.agent.host,
                         reports.of(a['port_id'], cut_at)[-1]['host'])
        # C is ACTIVE, as the controller last heard: if anything about C
        # was sent since the cut, the last of it says ACTIVE.
        self.assertEqual('ACTIVE',
                         self.client.get_port(c['port_id'])['status'])
        self.assertIn([s['status'] for s in
                       reports.of(c['port_id'], cut_at)][-1:],
                      ([], ['ACTIVE']))
        # Heartbeats resume, every report_interval again.
        beats = reports.beats_after(restored_at, timeout=30, count=2)
        self.assertEqual([self.agent.host] * 2,
                         [beat['host'] for beat in beats])
        self.assertEqual(before['started_at'], beats[-1]['started_at'])
        self.wait_health(url, rpc_not_down, 30, '/healthz with rpc up')
        self.assertEqual(1, rpc_up(url))
        self.assertEqual('ACTIVE',
                         self.client.get_port(b['port_id'])['status'])
        self.assertEqual([], self.chain_problems(b, reply_b))


class TestSigtermDuringOutage(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.start_agent(broker_proxy=True)

    def test_sigterm_exits_promptly_and_leaves_chains(self):
        """SIGTERM while the broker is away: exit 0 within 10 s.

        Stopping says goodbye to the broker; one that does not answer
        must not keep the process alive, nor take a chain down.
        """
        data, reply = self.bind()
        url = self.client.get_agent_state()['metrics']
        self.agent.broker_proxy.cut()
        self.wait_health(url, rpc_down, HEALTH_DOWN_WITHIN,
                         '/healthz with rpc down')
        started = time.monotonic()
        code = self.agent.terminate(timeout=60)
        took = time.monotonic() - started
        self.note('exited with %s %.2f s after SIGTERM (%s)', code, took,
                  'stop took over STOP_TIMEOUT'
                  if 'exiting anyway' in self.agent.log(20000)
                  else 'orderly stop')
        self.assertEqual(0, code)
        self.assertLess(took, EXIT_WITHIN)
        self.assertEqual([], self.chain_problems(data, reply))

    def test_sigterm_before_the_broker_was_ever_reached(self):
        """SIGTERM to an agent started while the broker is away: exit 0.

        Its RPC server is still waiting for the broker to connect at all;
        that wait must not hold the process either.
        """
        self.assertEqual(0, self.agent.terminate())
        self.agent.broker_proxy.cut()
        self.agent.start(wait=False)
        url = self.agent.metrics_url()
        self.wait_health(url, rpc_down, HEALTH_DOWN_WITHIN,
                         '/healthz with rpc down')
        # A heartbeat is due, and fails, before the signal.
        time.sleep(REPORT_INTERVAL + 1)
        started = time.monotonic()
        code = self.agent.terminate(timeout=60)
        took = time.monotonic() - started
        self.note('exited with %s %.2f s after SIGTERM (%s)', code, took,
                  'stop took over STOP_TIMEOUT'
                  if 'exiting anyway' in self.agent.log(20000)
                  else 'orderly stop')
        self.assertEqual(0, code)
        self.assertLess(took, EXIT_WITHIN)


class TestStartWithoutBroker(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.start_agent(broker_proxy=True)

    def test_start_repairs_then_serves_once_the_broker_is_back(self):
        """Start with the broker away: repair first, serve when it is back.

        A port is bound, the agent stopped, the relay cut and the port's
        qbr deleted; the agent started again must rebuild the chain,
        report RPC down on /healthz, and once the relay is back answer
        calls and report healthy, without a restart.
        """
        data, reply = self.bind()
        self.assertEqual(0, self.agent.terminate())
        self.agent.broker_proxy.cut()
        qbr = binding_mod.device_names(data['port_id']).qbr
        base.run(['ip', 'link', 'del', 'dev', qbr])
        self.assertIsNone(base.link_json(qbr))

        started = time.monotonic()
        self.agent.start(wait=False)
        took = self.wait_whole(data, reply, 30)
        self.note('chain whole %.2f s after the start, broker away', took)
        url = self.agent.metrics_url()
        (status, body), _ = self.wait_health(url, lambda code, body: True, 10,
                                             '/healthz answering')
        self.assertEqual(503, status, body)
        self.assertIn('rpc is not connected', body['problems'])
        self.assertEqual(0, rpc_up(url))
        # An outage, not a slow start: heartbeats are due and fail, and
        # RPC stays down for as long as the broker is away.
        time.sleep(2 * REPORT_INTERVAL + 1)
        status, body = health(url)
        self.assertEqual(503, status)
        self.assertIn('rpc is not connected', body['problems'])
        proc = self.agent.proc

        restored_at = time.monotonic()
        self.agent.broker_proxy.restore()
        state, took = self.first_call()
        self.note('first call answered %.2f s after the relay was '
                  'restored (%.1f s after the start)', took,
                  restored_at - started)
        self.assertIs(proc, self.agent.proc)
        self.assertIsNone(proc.poll())
        self.assertEqual(1, state['ports_by_status']['ACTIVE'])
        _, took = self.wait_health(url, lambda code, body: code == 200, 30,
                                   '/healthz 200')
        self.note('/healthz 200 %.2f s after the first call', took)
        self.assertEqual(1, rpc_up(url))
        port = self.client.get_port(data['port_id'])
        self.assertEqual('ACTIVE', port['status'], port['reason'])


class TestReadsDuringPlug(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.ovsdb = proxy_mod.SocketProxy(('127.0.0.1', 6640))
        self.addCleanup(self.ovsdb.cut)
        self.start_agent(sections={'ovs': {
            'ovsdb_connection': 'tcp:127.0.0.1:%d' % self.ovsdb.port}})

    def test_reads_answer_while_a_plug_waits_for_ovsdb(self):
        """Reads, /healthz and /metrics answer within 100 ms.

        A bind is made to wait inside its OVSDB transaction (the relay
        to ovsdb-server holds every byte); reads come from the store and
        a snapshot, never from under the plug's lock, so they answer.
        """
        old, _ = self.bind()
        url = self.agent.metrics_url()
        reads = {
            'get_agent_state': self.client.get_agent_state,
            'list_ports': self.client.list_ports,
            'get_port': lambda: self.client.get_port(old['port_id']),
            # Scrapes and health checks must not wait for a plug either.
            '/healthz': lambda: health(url),
            '/metrics': lambda: samples(url),
        }
        for read in reads.values():
            read()  # the client's reply queue is ready before timing
        data = self.binding_dict(netns=self.make_netns())
        names = binding_mod.device_names(data['port_id'])
        qvo = names.qvo

        def kernel_half_done():
            tap, qvo = base.link_json(names.tap), base.link_json(names.qvo)
            return (tap and qvo and tap.get('master') == names.qbr and
                    'LOWER_UP' in tap['flags'] and 'UP' in qvo['flags'])

        self.ovsdb.hold()
        self.addCleanup(self.ovsdb.release)
        replies = queue.Queue()

        def bind():
            try:
                replies.put(self.client.bind_port(data))
            except Exception as e:
                replies.put(e)
        binder = threading.Thread(target=bind, daemon=True)
        binder.start()
        # The kernel half of the plug is done (the VM's end is up, the
        # tap in qbr, qvo up): the plug now waits in its OVSDB half.
        wait_for(kernel_half_done, 10, 'the kernel half of the plug',
                 interval=0.01)
        timings = {name: [] for name in reads}
        listed = []
        for _ in range(ROUNDS):
            for name, read in reads.items():
                started = time.monotonic()
                value = read()
                timings[name].append(time.monotonic() - started)
                if name == 'list_ports':
                    listed = value
            time.sleep(HOLD_FOR / ROUNDS)
        still_held = binder.is_alive()
        in_ovs = base.ovs_row('Port', qvo, ['name'])
        self.ovsdb.release()
        reply = replies.get(timeout=60)
        for name, took in sorted(timings.items()):
            self.note('%s during the plug: %d calls, median %.1f ms, '
                      'slowest %.1f ms', name, len(took),
                      sorted(took)[len(took) // 2] * 1000, max(took) * 1000)
        self.assertTrue(still_held, 'the bind was not held in OVSDB')
        self.assertIsNone(in_ovs)
        self.assertNotIsInstance(reply, Exception)
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        # The port being plugged is listed, not verified yet.
        self.assertEqual(
            {old['port_id']: 'ACTIVE', data['port_id']: 'PENDING'},
            {p['port_id']: p['status'] for p in listed})
        for name, took in timings.items():
            self.assertLess(max(took), READ_WITHIN,
                            '%s took %s s' % (name, took))
