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

"""The firewall tools the privileged daemon runs, with the tools faked."""

import threading
from unittest import mock

from oslotest import base

from vifagent.privileged import firewall as priv_fw


class FakeTools:
    """Stands in for the tools; ``together`` calls must overlap."""

    def __init__(self, together=1, fail=()):
        self.barrier = threading.Barrier(together, timeout=10)
        self.calls = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, argv, stdin=None):
        with self.lock:
            self.calls.append((argv[0], stdin))
        if argv[0] in ('iptables-save', 'ip6tables-save', 'ipset', 'nft',
                       'iptables-restore', 'ip6tables-restore') and \
                not (argv[0] == 'ipset' and argv[1:2] == ['-exist']):
            # Raises BrokenBarrierError unless the others run meanwhile.
            self.barrier.wait()
        if argv[0] in self.fail:
            return 1, '', '%s: boom' % argv[0]
        return 0, '*filter\nCOMMIT\n' if 'save' in argv[0] else '', ''


class TestTools(base.BaseTestCase):

    def use(self, tools):
        patcher = mock.patch.object(priv_fw, '_run', tools)
        patcher.start()
        self.addCleanup(patcher.stop)
        return tools

    def test_the_dumps_run_at_once(self):
        tools = self.use(FakeTools(together=4))
        dumps = priv_fw._dump()
        self.assertEqual('*filter\nCOMMIT\n', dumps[4])
        self.assertEqual('*filter\nCOMMIT\n', dumps[6])
        self.assertEqual(4, len(tools.calls))

    def test_a_partial_dump_runs_only_its_tools(self):
        tools = self.use(FakeTools(together=2))
        dumps = priv_fw._dump([6, 'arp'])
        self.assertEqual(['ip6tables-save', 'nft'],
                         sorted(name for name, _ in tools.calls))
        self.assertEqual({6, 'arp', 'sysctls'}, set(dumps))

    def test_the_families_and_the_bridge_table_apply_at_once(self):
        tools = self.use(FakeTools(together=3))
        batch = {'tables': [[4, 'filter', [[':', 'vfa-iabcdef01-23']]],
                            [6, 'filter', [[':', 'vfa-iabcdef01-23']]]],
                 'sets': [['create', 'vfa-v4-x', 4]],
                 'destroy_sets': ['vfa-v4-y'],
                 'arp': [['base']]}
        self.assertIsNone(priv_fw._apply(batch))
        names = [name for name, _ in tools.calls]
        # Sets are made before any rule names them and removed after.
        self.assertEqual('ipset', names[0])
        self.assertEqual('ipset', names[-1])
        self.assertIn('destroy vfa-v4-y', tools.calls[-1][1])
        self.assertEqual({'iptables-restore', 'ip6tables-restore', 'nft'},
                         set(names[1:-1]))

    def test_a_failed_family_stops_before_set_removal(self):
        tools = self.use(FakeTools(together=2, fail=('ip6tables-restore',)))
        batch = {'tables': [[4, 'filter', [[':', 'vfa-iabcdef01-23']]],
                            [6, 'filter', [[':', 'vfa-iabcdef01-23']]]],
                 'destroy_sets': ['vfa-v4-y']}
        error = priv_fw._apply(batch)
        self.assertIn('ip6tables-restore: boom', error)
        self.assertNotIn('destroy vfa-v4-y',
                         [stdin for _, stdin in tools.calls if stdin])
