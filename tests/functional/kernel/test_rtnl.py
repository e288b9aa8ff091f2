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

import uuid

from oslotest import base as oslo_base

from tests.functional import base
from vifagent.kernel import rtnl


class TestLinkReader(oslo_base.BaseTestCase):
    """The lean reader agrees with iproute2 on every field it decodes."""

    def setUp(self):
        super().setUp()
        self.reader = rtnl.LinkReader()
        self.addCleanup(self.reader.close)
        suffix = uuid.uuid4().hex[:8]
        self.br, self.a, self.b = ('qbrt' + suffix, 'qvbt' + suffix,
                                   'qvot' + suffix)
        self.ns = 'vifagent-test-' + suffix
        base.run(['ip', 'link', 'add', self.br, 'type', 'bridge',
                  'stp_state', '1', 'forward_delay', '700',
                  'mcast_snooping', '0'])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.br], False)
        base.run(['ip', 'link', 'add', self.a, 'mtu', '1400', 'type',
                  'veth', 'peer', 'name', self.b])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.a], False)
        base.run(['ip', 'link', 'set', self.a, 'master', self.br, 'alias',
                  'vifagent:x', 'group', '77', 'up'])

    def test_fields_match_iproute2(self):
        for name in (self.br, self.a, self.b):
            fields = self.reader.get(name)
            ip = base.link_json(name)
            self.assertEqual(ip['ifindex'], fields.index)
            self.assertEqual(ip['mtu'], fields.mtu)
            self.assertEqual('UP' in ip['flags'], fields.up)
            self.assertEqual('LOWER_UP' in ip['flags'], fields.carrier)
            self.assertEqual(ip.get('ifalias'), fields.alias)
            self.assertEqual(ip['linkinfo']['info_kind'], fields.kind)
            with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % name) as f:
                self.assertEqual(f.read().strip() == '1',
                                 fields.ipv6_disabled)
        bridge = self.reader.get(self.br)
        self.assertEqual((1, 700, 0), (bridge.stp,
                                       bridge.forward_delay,
                                       bridge.mcast_snooping))
        a, b = self.reader.get(self.a), self.reader.get(self.b)
        self.assertEqual(bridge.index, a.master)
        self.assertEqual((b.index, a.index), (a.peer, b.peer))
        self.assertEqual(77, a.group)
        self.assertIsNone(a.peer_netnsid)

    def test_ipv6_disabled_is_read(self):
        self.assertFalse(self.reader.get(self.br).ipv6_disabled)
        with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % self.br,
                  'w') as f:
            f.write('1')
        self.assertTrue(self.reader.get(self.br).ipv6_disabled)

    def test_netns_peer(self):
        base.run(['ip', 'netns', 'add', self.ns])
        self.addCleanup(base.run, ['ip', 'netns', 'del', self.ns], False)
        base.run(['ip', 'link', 'set', self.b, 'netns', self.ns])
        a = self.reader.get(self.a)
        self.assertIsNotNone(a.peer_netnsid)

    def test_missing_is_none(self):
        self.assertIsNone(self.reader.get('qbr' + uuid.uuid4().hex[:11]))

    def test_dump_filters_by_name(self):
        wanted = {self.br, self.b}
        names = {f.name for f in self.reader.dump(wanted.__contains__)}
        self.assertEqual(wanted, names)
        self.assertIn('lo', {f.name for f in self.reader.dump()})
