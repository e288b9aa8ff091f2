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

"""Hostile operands to the privileged entrypoints: refused, host unchanged.

The entrypoints run in this process (as root), exactly the code the
daemon runs. Every target is a device this test made (a stand-in uplink,
a stand-in integration bridge, another agent's marked chain) or one
every host has (lo); each must be byte-for-byte the same afterwards.
"""

import uuid

from tests.functional import base
from vifagent import binding as binding_mod
from vifagent.kernel import rtnl
from vifagent import ops as ops_mod
from vifagent.ops import LinkOp
from vifagent.ops import Op
from vifagent import privileged
from vifagent.privileged import linux as priv_linux


def wire(key, *ops):
    return ops_mod.encode_groups({key: list(ops)})


def snapshot(names):
    """What ip(8) says of each device (None when absent)."""
    return {name: base.link_json(name) for name in names}


def disable_ipv6(name):
    try:
        with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % name) as f:
            return f.read()
    except OSError:
        return None


class TestHostileOperands(base.RootTestCase):

    def setUp(self):
        super().setUp()
        privileged.run_in_process()
        suffix = uuid.uuid4().hex[:8]
        self.port = str(uuid.uuid4())
        self.names = binding_mod.device_names(self.port)
        # A stand-in uplink, a stand-in br-int, and another agent's
        # marked chain on this host.
        self.uplink = 'vfu' + suffix
        self.bridge = 'vfb' + suffix
        base.run(['ip', 'link', 'add', self.uplink, 'type', 'veth', 'peer',
                  'name', 'vfp' + suffix])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.uplink], False)
        base.run(['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.bridge], False)
        self.other = str(uuid.uuid4())
        self.other_names = binding_mod.device_names(self.other)
        base.run(['ip', 'link', 'add', self.other_names.qbr, 'type',
                  'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del',
                                   self.other_names.qbr], False)
        base.run(['ip', 'link', 'set', self.other_names.qbr, 'alias',
                  rtnl.alias_for(self.other)])
        self.tap = self.make_tap()
        # The port's own bridge, which the attacks try to misuse.
        self.addCleanup(base.run, ['ip', 'link', 'del', self.names.qbr],
                        False)
        priv_linux.apply_link_ops(wire(
            self.port, LinkOp(Op.CREATE_BRIDGE, self.names.qbr),
            LinkOp(Op.SET_ALIAS, self.names.qbr,
                   (rtnl.alias_for(self.port),))), [])
        self.watched = [self.uplink, self.bridge, 'lo',
                        self.other_names.qbr, self.names.qbr, self.tap]
        self.before = snapshot(self.watched)
        self.sysctls = {n: disable_ipv6(n) for n in ('all', 'default')}

    def assertUnchanged(self):
        self.assertEqual(self.before, snapshot(self.watched))
        self.assertEqual(self.sysctls,
                         {n: disable_ipv6(n) for n in ('all', 'default')})

    def assertRefused(self, result, key):
        self.assertIn(key, result)
        self.assertTrue(result[key].startswith('refused: '), result[key])

    def test_link_operations(self):
        qbr = self.names.qbr
        attacks = [
            LinkOp(Op.SET_MASTER, self.uplink, (qbr,)),
            LinkOp(Op.SET_MASTER, self.bridge, (qbr,)),
            LinkOp(Op.SET_MTU, 'lo', (1280,)),
            LinkOp(Op.SET_UP, self.uplink),
            LinkOp(Op.DISABLE_IPV6, 'all'),
            LinkOp(Op.DISABLE_IPV6, 'default'),
            LinkOp(Op.DISABLE_IPV6, '../x'),
            LinkOp(Op.SET_ALIAS, self.tap, (rtnl.alias_for(self.port),)),
            LinkOp(Op.SET_MASTER, self.tap, (self.other_names.qbr,)),
            LinkOp(Op.SET_BRIDGE_OPTIONS, self.other_names.qbr),
            LinkOp(Op.SET_ALIAS, qbr, (rtnl.alias_for(self.other),)),
            LinkOp(Op.CREATE_VETH, self.names.qvb, ('eth1', 1500)),
        ]
        for attack in attacks:
            result = priv_linux.apply_link_ops(wire(self.port, attack), [])
            self.assertRefused(result['ports'], self.port)
            self.assertUnchanged()

    def test_deletions(self):
        # Not ours, or another port's bridge without its own marker.
        base.run(['ip', 'link', 'set', self.other_names.qbr, 'alias',
                  'vifagent:' + str(uuid.uuid4())])
        self.before = snapshot(self.watched)
        for name in (self.uplink, self.bridge, 'lo', self.tap,
                     self.other_names.qbr):
            result = priv_linux.apply_link_ops({}, [name])
            self.assertRefused(result['deletes'], name)
        # Named like this port's bridge, marked for another port.
        base.run(['ip', 'link', 'set', self.names.qbr, 'alias',
                  rtnl.alias_for(self.other)])
        self.before = snapshot(self.watched)
        result = priv_linux.apply_link_ops({}, [self.names.qbr])
        self.assertRefused(result['deletes'], self.names.qbr)
        self.assertUnchanged()

    def test_namespaces(self):
        for netns in ('../x', '/proc/1/ns/net', 'a b', ''):
            result = priv_linux.set_up_in_netns({self.port: netns})
            self.assertRefused(result, self.port)
        attack = LinkOp(Op.CREATE_NETNS_TAP, self.names.tap,
                        ('../../proc/1/ns/net', 'fa:16:3e:00:00:01', 1500))
        result = priv_linux.apply_link_ops(wire(self.port, attack), [])
        self.assertRefused(result['ports'], self.port)
        self.assertIsNone(base.link_json(self.names.tap))
        self.assertUnchanged()

    def test_the_port_key_must_be_a_port(self):
        for key in ('all', self.port + '\n', self.other.upper() + ' '):
            result = priv_linux.apply_link_ops(
                wire(key, LinkOp(Op.SET_UP, self.names.qbr)), [])
            self.assertRefused(result['ports'], key)
        self.assertUnchanged()
