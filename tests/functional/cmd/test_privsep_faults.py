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

"""The privileged daemon killed, and hung, in the middle of a batch.

The daemon meets a fault point after the first port of a batch: SIGKILL,
or SIGSTOP (a daemon that never answers). The agent must notice (an
error, or a timeout: never a hang), give every port of the batch ERROR
with the reason (never ACTIVE), start a new daemon and converge.
"""

import os
import re
import time

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional.cmd import test_agent
from vifagent import binding as binding_mod

PID = r'Privileged daemon of vifagent\.privileged\.net_admin is pid (\d+)'


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(') ', 1)[1][0] != 'Z'
    except FileNotFoundError:
        return False


def wait_statuses(client, port_ids, status, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        seen = {pid: client.get_port(pid) for pid in port_ids}
        seen = {pid: (p['status'], p['reason']) for pid, p in seen.items()}
        if {s for s, _ in seen.values()} == {status}:
            return
        if time.monotonic() > deadline:
            raise AssertionError('not all %s: %s' % (status, seen))
        time.sleep(0.2)


class TestPrivsepFaults(test_agent.AgentTestCase):

    def setUp(self):
        base.RootTestCase.setUp(self)
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            privsep_timeout=3))
        self.agent.attach_log_on_failure(self)
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client
        self.bound = {}

    def sync_through_fault(self, fault):
        """Restart armed with ``fault``; sync three ports; the reply."""
        self.agent.terminate()
        self.agent.start(faults=fault)
        ports = [self.binding_dict(netns=self.make_netns())
                 for _ in range(3)]
        started = time.monotonic()
        reply = self.client.sync_ports(ports)
        took = time.monotonic() - started
        print('%s: sync answered in %.2f s' % (fault, took))
        self.assertLess(took, 25)  # a timeout, not a hang
        return [p['port_id'] for p in ports], reply

    def assertErrorThenActive(self, port_ids, reply, reason):
        statuses = {p['port_id']: (p['status'], p['reason'])
                    for p in reply['ports']}
        for pid in port_ids:
            self.assertEqual('ERROR', statuses[pid][0], statuses[pid])
            self.assertIn(reason, statuses[pid][1])
        started = time.monotonic()
        wait_statuses(self.client, port_ids, 'ACTIVE')
        print('converged %.2f s after the reply' % (
            time.monotonic() - started))
        for pid in port_ids:
            data = self.client.get_port(pid)
            self.assertEqual([], base.chain_problems(
                self.agent_binding(pid), data['devices']['tap'],
                data['vlan'], self.agent.bridge, self.agent.host))

    def agent_binding(self, port_id):
        return binding_mod.Binding.from_dict(self.bound[port_id])

    def daemons(self):
        return [int(m) for m in re.findall(PID, self.agent.log(10 ** 7))]

    def run_fault(self, fault, reason):
        port_ids, reply = self.sync_through_fault(fault)
        self.assertEqual(1, len(os.listdir(self.once_dir())), 'no fault')
        first = self.daemons()[-1]
        self.assertErrorThenActive(port_ids, reply, reason)
        self.assertFalse(alive(first), 'the old daemon %d lives' % first)
        self.assertNotEqual(first, self.daemons()[-1])

    def once_dir(self):
        dirs = sorted(d for d in os.listdir(self.agent.dir)
                      if d.startswith('faults-'))
        return os.path.join(self.agent.dir, dirs[-1])

    def binding_dict(self, netns=None, **fields):
        data = super().binding_dict(netns=netns, **fields)
        self.bound[data['port_id']] = data
        return data

    def test_daemon_killed_mid_batch(self):
        self.run_fault('privsep.mid_batch=kill', 'privileged daemon died')

    def test_daemon_hung_mid_batch(self):
        self.run_fault('privsep.mid_batch=hang', 'gave no answer')
