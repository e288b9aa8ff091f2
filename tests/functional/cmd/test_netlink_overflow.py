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

"""End to end: a burst of link events overflows the agent's netlink socket.

The agent's link monitor gets a receive buffer of 4 KiB (``[agent]
netlink_rcvbuf``, the smallest allowed) and its periodic pass is an hour
away; a burst of a few hundred link notifications (alias changes of a
bridge of the test's own) with drift of a port's chain in the middle of
it makes the kernel drop notifications (ENOBUFS). The agent must notice,
run a full pass that repairs the drift whatever events it lost, and keep
listening: a later drift is repaired by its event alone.
"""

import subprocess
import time
import uuid

from tests.functional import base
from tests.functional.cmd import test_broker_outage as outage
from vifagent import binding as binding_mod

#: Alias changes before and after the drift.
BURST = 150
#: Drift made during the burst is repaired within this (a full pass).
REPAIRED_WITHIN = 20


class TestNetlinkOverflow(outage.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.start_agent(netlink_rcvbuf=4096, resync_interval=3600)
        self.noise = 'vfo' + uuid.uuid4().hex[:8]
        base.run(['ip', 'link', 'add', self.noise, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.noise], False)

    def aliases(self, first):
        return ''.join('link set %s alias burst-%d\n' % (self.noise, n)
                       for n in range(first, first + BURST))

    def test_overflow_then_full_pass_and_events_again(self):
        data, reply = self.bind()
        names = binding_mod.device_names(data['port_id'])
        url = self.client.get_agent_state()['metrics']
        self.wait_health(url, lambda code, body: code == 200, 30, 'healthy')
        before = self.client.get_agent_state()
        old_qbr = base.link_json(names.qbr)['ifindex']

        started = time.monotonic()
        subprocess.run(['ip', '-batch', '-'], check=True, text=True,
                       input=self.aliases(0) +
                       'link set %s down\n' % names.qvo +
                       'link del %s\n' % names.qbr +
                       self.aliases(BURST))
        took = self.wait_whole(data, reply, REPAIRED_WITHIN)
        outage.wait_for(lambda: 'UP' in base.link_json(names.qvo)['flags'],
                        REPAIRED_WITHIN, 'qvo up again')
        self.note('chain whole %.2f s after the burst began', took)
        self.assertNotEqual(old_qbr, base.link_json(names.qbr)['ifindex'])
        state = self.client.get_agent_state()
        self.assertGreater(state['netlink']['overflows'],
                           before['netlink']['overflows'])
        self.agent.wait_log('Full pass requested: netlink events were lost')
        outage.wait_for(
            lambda: self.client.get_agent_state()['reconcile'][
                'full_passes'] > before['reconcile']['full_passes'],
            REPAIRED_WITHIN, 'a full pass after the overflow')
        self.assertEqual('ACTIVE',
                         self.client.get_port(data['port_id'])['status'])
        self.note('full pass %.2f s after the burst began',
                  time.monotonic() - started)

        # Still listening: one more drift, repaired by its event.
        qbr = base.link_json(names.qbr)['ifindex']
        base.run(['ip', 'link', 'del', 'dev', names.qbr])
        took = self.wait_whole(data, reply, 5)
        self.note('a later drift repaired in %.3f s', took)
        self.assertNotEqual(qbr, base.link_json(names.qbr)['ifindex'])
        (code, body), _ = self.wait_health(
            url, lambda code, body: code == 200, 30, 'healthy')
        self.assertEqual(1, outage.samples(url)[
            ('vifagent_dependency_up', ('dependency', 'netlink'))])
        self.assertTrue(self.client.get_agent_state()['netlink']['healthy'])
        self.assertEqual(0, state['netlink']['restarts'])
