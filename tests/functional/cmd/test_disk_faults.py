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

"""The agent's disk full, read-only, and its store damaged.

The state path is on a small file system of the test's own. Calls that
must write fail with StoreUnavailable within seconds and change nothing
on the host; reads keep serving; status changes still reach the
controller. A damaged store stops the agent at start with a clear
message, chains untouched.
"""

import errno
import os
import time

import fixtures

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional.cmd import test_agent
from tests.functional.cmd import test_broker_outage as outage
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent import store as store_mod


class SmallDisk(fixtures.Fixture):
    """A small ext4 file system on a loop device, the test's own.

    ext4 because it is what state paths live on, and because it goes
    read-only the way a real disk does: an error with errors=remount-ro
    (triggered through ext4's sysfs) turns it read-only under the agent's
    open files, which a remount never could.
    """

    def __init__(self, size_mb=16):
        super().__init__()
        self.size_mb = size_mb

    def _setUp(self):
        top = self.useFixture(fixtures.TempDir()).path
        image = os.path.join(top, 'disk.img')
        with open(image, 'wb') as f:
            f.truncate(self.size_mb << 20)
        base.run(['mkfs.ext4', '-q', '-m', '0', image])
        self.path = os.path.join(top, 'mnt')
        os.mkdir(self.path)
        base.run(['mount', '-o', 'loop,errors=remount-ro', image,
                  self.path])
        self.addCleanup(base.run, ['umount', '-l', self.path], False)
        self.device = base.run(['findmnt', '-n', '-o', 'SOURCE',
                                self.path]).strip()
        self.filler = os.path.join(self.path, 'filler')

    def fill(self):
        """Take every free block."""
        for size in (1 << 16, 512):
            with open(self.filler, 'ab', buffering=0) as f:
                try:
                    while True:
                        f.write(b'\0' * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        os.sync()

    def free(self):
        os.unlink(self.filler)
        os.sync()

    def fail(self):
        """An ext4 error: the file system turns itself read-only."""
        with open('/sys/fs/ext4/%s/trigger_fs_error' % os.path.basename(
                self.device), 'w') as f:
            f.write('vifagent functional test\n')


class TestDisk(test_agent.AgentTestCase):

    def setUp(self):
        base.RootTestCase.setUp(self)
        self.disk = self.useFixture(SmallDisk())
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            report_interval=2, state_path=os.path.join(self.disk.path,
                                                       'state')))
        self.agent.attach_log_on_failure(self)
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client
        self.reports = outage.Reports(self, self.agent)

    def assertRefusedAndHarmless(self, kept):
        """Writes fail typed and fast; the host and reads stay as they are."""
        spare = self.binding_dict(netns=self.make_netns())
        for method, args in (('bind_port', (spare,)),
                             ('unbind_port', (kept['port_id'],)),
                             ('sync_ports', ([spare],))):
            started = time.monotonic()
            e = self.assertRaises(exception.StoreUnavailable,
                                  getattr(self.client, method), *args)
            took = time.monotonic() - started
            print('%s refused in %.2f s: %s' % (method, took, e))
            self.assertLess(took, 10)
        self.assertNoDevices(spare['port_id'])
        self.assertEqual('ACTIVE',
                         self.client.get_port(kept['port_id'])['status'])
        self.assertEqual([kept['port_id']],
                         [p['port_id'] for p in self.client.list_ports()])
        self.assertEqual(1, self.client.get_agent_state()['ports'])
        return spare

    def assertStatusStillReported(self, kept):
        """A status change while the store cannot record it is sent."""
        moment = time.monotonic()
        # The VM goes away: its port is ERROR now.
        base.run(['ip', 'netns', 'del', kept['netns']])
        outage.wait_for(lambda: [s for s in self.reports.of(
            kept['port_id'], after=moment) if s['status'] == 'ERROR'],
            30, 'an ERROR status for %s' % kept['port_id'])

    def test_full_disk(self):
        kept, _ = self.bind()
        self.disk.fill()
        spare = self.assertRefusedAndHarmless(kept)
        self.assertStatusStillReported(kept)
        self.disk.free()
        self.assertEqual('ACTIVE', self.client.bind_port(spare)['status'])

    def test_disk_turned_read_only(self):
        kept, _ = self.bind()
        self.disk.fail()
        self.assertRefusedAndHarmless(kept)
        self.assertStatusStillReported(kept)


class TestDamagedStore(test_agent.AgentTestCase):

    def test_refuses_to_start_and_touches_nothing(self):
        kept, _ = self.bind()
        names = [n for n in test_agent.chain_names(kept['port_id'])]
        indexes = {n: base.link_json(n)['ifindex'] for n in names}
        self.assertEqual(0, self.agent.terminate())
        path = os.path.join(self.agent.dir, 'state', store_mod.DB_NAME)
        size = os.path.getsize(path)
        with open(path, 'r+b') as f:
            f.seek(100)  # past the header: SQLite still opens the file
            f.write(os.urandom(max(size, 8192) - 100))
        started = time.monotonic()
        self.agent.start(wait=False)
        self.assertEqual(2, self.agent.proc.wait(30))
        print('refused in %.2f s' % (time.monotonic() - started))
        self.assertIn('Not starting: ', self.agent.log())
        with open(os.path.join(self.agent.dir, 'agent.stderr')) as f:
            stderr = f.read()
        self.assertIn('not starting: ', stderr)
        self.assertIn(path, stderr)
        self.assertEqual(indexes, {n: base.link_json(n)['ifindex']
                                   for n in names})
        devices = binding_mod.device_names(kept['port_id'])
        self.assertIsNotNone(base.ovs_row('Port', devices.qvo, ['name']))
