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

"""End to end: RabbitMQ itself stopped for 30 s and started again.

Unlike a cut relay (test_broker_outage), a restarted node forgets every
queue, binding and message that was not durable: the agent's RPC queues,
its reply queues and the controller's report queue are gone and must be
declared again by whoever consumes them, in whatever order they come
back. The node is the test's own (tls.PrivateRabbit without TLS: own
ports, data and node name), so the shared broker is never touched.
"""

import time

from tests.functional import base
from tests.functional.cmd import test_broker_outage as outage
from tests.functional import tls
from vifagent import binding as binding_mod

#: How long the node stays away.
OUTAGE = 30
#: After the node is back, a call must succeed within this (oslo.messaging
#: backs its reconnection off up to 30 s between attempts).
CALL_BACK_WITHIN = 60
#: After the node is back, the controller hears every change within this.
REPORTED_WITHIN = 90
#: A second controller listener subscribes this long after the node is
#: back, as a controller whose reconnection backed off further than the
#: agent's would (oslo.messaging's backoff reaches 30 s).
LATE_LISTENER = 10


class TestBrokerRestart(outage.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.rabbit = self.useFixture(tls.PrivateRabbit())
        self.start_agent(transport_url=self.rabbit.url)

    def test_restart_with_changes_meanwhile(self):
        """Stop the node 30 s while ports change, then start it.

        A's VM (its namespace) goes away for good: ERROR. C's goes and
        comes back: ACTIVE again. B's qbr is deleted and repaired. Once
        the node is back the agent, not restarted, answers calls, the
        controller's listener (which reconnects on its own like the
        agent) hears A's ERROR and nothing stale about C, heartbeats
        resume and every binding is still there.
        """
        reports = outage.Reports(self, self.agent)
        reports.beats_after(0, timeout=30)
        a, _ = self.bind()
        b, reply_b = self.bind()
        c, _ = self.bind()
        for port in (a, b, c):
            outage.wait_for(lambda: any(
                s['status'] == 'ACTIVE' for s in reports.of(port['port_id'])),
                30, 'ACTIVE reported')
        before = self.client.get_agent_state()
        url = before['metrics']

        stopped_at = time.monotonic()
        self.rabbit.stop()
        self.note('node stopped in %.1f s', time.monotonic() - stopped_at)
        self.wait_health(url, outage.rpc_down, outage.HEALTH_DOWN_WITHIN,
                         '/healthz with rpc down')
        base.run(['ip', 'netns', 'del', a['netns']])
        base.run(['ip', 'netns', 'del', c['netns']])
        outage.wait_for(
            lambda: outage.samples(url)[
                ('vifagent_ports', ('status', 'ERROR'))] == 2,
            10, 'A and C in ERROR')
        base.run(['ip', 'netns', 'add', c['netns']])
        base.run(['ip', 'link', 'del', 'dev',
                  binding_mod.device_names(b['port_id']).qbr])
        self.wait_whole(b, reply_b, 10)
        outage.wait_for(
            lambda: outage.samples(url)[
                ('vifagent_ports', ('status', 'ACTIVE'))] == 2,
            20, 'B and C ACTIVE')
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped_at)))

        started = time.monotonic()
        self.rabbit.start()
        up_at = time.monotonic()
        self.note('node started in %.1f s after %.1f s away',
                  up_at - started, started - stopped_at)
        state, took = self.first_call(CALL_BACK_WITHIN)
        self.note('first call answered %.2f s after the broker was up',
                  took)
        self.assertEqual(before['started_at'], state['started_at'])
        self.assertEqual(
            sorted(p['port_id'] for p in (a, b, c)),
            sorted(p['port_id'] for p in self.client.list_ports()))

        latest = self.client.get_port(a['port_id'])
        self.assertEqual('ERROR', latest['status'])
        expected = [(latest['status'], latest['reason'])]
        _, took = outage.wait_for(
            lambda: [(s['status'], s['reason'])
                     for s in reports.of(a['port_id'], stopped_at)][-1:] ==
            expected, REPORTED_WITHIN, 'A reported %s' % (expected,))
        self.note('A\'s ERROR reached the listener %.2f s after the first '
                  'call', took)
        self.assertEqual('ACTIVE',
                         self.client.get_port(c['port_id'])['status'])
        self.assertIn([s['status'] for s in
                       reports.of(c['port_id'], stopped_at)][-1:],
                      ([], ['ACTIVE']))

        time.sleep(max(0.0, LATE_LISTENER - (time.monotonic() - up_at)))
        late = outage.Reports(self, self.agent)
        _, took = outage.wait_for(
            lambda: [(s['status'], s['reason'])
                     for s in late.of(a['port_id'])][-1:] == expected,
            REPORTED_WITHIN, 'A reported %s to the late listener'
            % (expected,))
        self.note('A\'s ERROR reached a listener subscribed %.0f s after '
                  'the broker was up %.2f s after it subscribed',
                  LATE_LISTENER, took)
        self.assertIn([s['status'] for s in late.of(c['port_id'])][-1:],
                      ([], ['ACTIVE']))
        beats = reports.beats_after(time.monotonic(), timeout=30, count=2)
        self.assertEqual([self.agent.host] * 2,
                         [beat['host'] for beat in beats])
        self.wait_health(url, outage.rpc_not_down, 30, '/healthz with rpc up')
        self.assertEqual('ACTIVE',
                         self.client.get_port(b['port_id'])['status'])
        self.assertEqual([], self.chain_problems(b, reply_b))
