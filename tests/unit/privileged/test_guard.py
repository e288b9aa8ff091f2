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

"""The privileged daemon's own checks, by table: hostile operands refused."""

import uuid

from oslotest import base

from vifagent import binding as binding_mod
from vifagent.kernel import rtnl
from vifagent.ops import LinkOp
from vifagent.ops import Op
from vifagent.privileged import guard

PORT = str(uuid.uuid4())
OTHER = str(uuid.uuid4())
N = binding_mod.device_names(PORT)
OT = binding_mod.device_names(OTHER)
ALIAS = rtnl.alias_for(PORT)

LINKS = {
    'eth0': rtnl.Link(name='eth0', index=2, kind=None),
    'lo': rtnl.Link(name='lo', index=1),
    'br-int': rtnl.Link(name='br-int', index=3, kind='openvswitch'),
    'vnet3': rtnl.Link(name='vnet3', index=4, kind='tun'),
    N.qbr: rtnl.Link(name=N.qbr, index=5, kind='bridge', alias=ALIAS),
    N.qvb: rtnl.Link(name=N.qvb, index=6, kind='veth'),
    OT.qvb: rtnl.Link(name=OT.qvb, index=7, kind='veth',
                      alias=rtnl.alias_for(OTHER)),
    OT.qbr: rtnl.Link(name=OT.qbr, index=8, kind='bridge'),
}


def op(kind, device, *args):
    return LinkOp(kind, device, tuple(args))


ALLOWED = [
    [op(Op.CREATE_BRIDGE, N.qbr), op(Op.DISABLE_IPV6, N.qbr),
     op(Op.SET_ALIAS, N.qbr, ALIAS), op(Op.SET_UP, N.qbr)],
    [op(Op.CREATE_VETH, N.qvb, N.qvo, 1450),
     op(Op.TX_CHECKSUM_OFF, N.qvb), op(Op.SET_MASTER, N.qvb, N.qbr)],
    [op(Op.SET_MASTER, 'vnet3', N.qbr), op(Op.SET_MTU, 'vnet3', 1450),
     op(Op.SET_UP, 'vnet3')],
    [op(Op.CREATE_NETNS_TAP, N.tap, 'vifagent-vm1', 'fa:16:3e:00:00:01',
        1500)],
    # Unmarked and named like ours: adoption.
    [op(Op.SET_ALIAS, N.qvb, ALIAS), op(Op.SET_BRIDGE_OPTIONS, N.qbr)],
]

REFUSED = [
    ('eth0', [op(Op.SET_UP, 'eth0')]),
    ('lo', [op(Op.SET_MTU, 'lo', 1500)]),
    ('uplink into a qbr', [op(Op.SET_MASTER, 'eth0', N.qbr)]),
    ('br-int into a qbr', [op(Op.SET_MASTER, 'br-int', N.qbr)]),
    ('ipv6 for all', [op(Op.DISABLE_IPV6, 'all')]),
    ('ipv6 for default', [op(Op.DISABLE_IPV6, 'default')]),
    ('path', [op(Op.DISABLE_IPV6, '../x')]),
    ('tap alias', [op(Op.SET_ALIAS, 'vnet3', ALIAS)]),
    ('tap elsewhere', [op(Op.SET_MASTER, 'vnet3', 'br-int')]),
    ('tap on another port', [op(Op.SET_MASTER, 'vnet3', OT.qbr)]),
    ('another port device', [op(Op.SET_UP, OT.qvb)]),
    ('another port bridge', [op(Op.SET_BRIDGE_OPTIONS, OT.qbr)]),
    ('foreign marker written', [op(Op.SET_ALIAS, N.qbr, 'x')]),
    ('other port marker', [op(Op.SET_ALIAS, N.qbr,
                              rtnl.alias_for(OTHER))]),
    ('mtu', [op(Op.SET_MTU, N.qbr, 10)]),
    ('mtu type', [op(Op.SET_MTU, N.qbr, '1500')]),
    ('veth peer', [op(Op.CREATE_VETH, N.qvb, 'eth1', 1500)]),
    ('bridge name', [op(Op.CREATE_BRIDGE, 'br-int')]),
    ('netns path', [op(Op.CREATE_NETNS_TAP, N.tap, '../x',
                       'fa:16:3e:00:00:01', 1500)]),
    ('netns tap name', [op(Op.CREATE_NETNS_TAP, 'eth0', 'vifagent-vm1',
                           'fa:16:3e:00:00:01', 1500)]),
    ('stray argument', [op(Op.SET_UP, N.qbr, 'down')]),
]


class TestGroups(base.BaseTestCase):

    def test_the_planner_vocabulary_is_allowed(self):
        for ops in ALLOWED:
            guard.check_group(PORT, ops, LINKS)

    def test_hostile_operations_are_refused(self):
        for why, ops in REFUSED:
            try:
                guard.check_group(PORT, ops, LINKS)
            except guard.Refused:
                continue
            self.fail('not refused: %s' % why)

    def test_key_must_be_a_port_id(self):
        for key in ('all', PORT + '\n', None, '../x'):
            self.assertRaises(guard.Refused, guard.check_group, key,
                              [op(Op.SET_UP, N.qbr)], LINKS)


class TestDeletes(base.BaseTestCase):

    def test_own_marked_and_absent_devices_may_go(self):
        guard.check_delete(N.qbr, LINKS)
        guard.check_delete(N.qvo, LINKS)   # absent
        guard.check_delete(N.qvb, LINKS)   # unmarked veth end: adoption
        guard.check_delete(OT.qvb, LINKS)   # its own marker

    def test_anything_else_is_refused(self):
        links = dict(LINKS)
        links[N.tap] = rtnl.Link(name=N.tap, index=9, kind='veth',
                                 alias=rtnl.alias_for(OTHER))
        for name in ('eth0', 'lo', 'br-int', 'vnet3', OT.qbr, N.tap):
            self.assertRaises(guard.Refused, guard.check_delete, name,
                              links)
