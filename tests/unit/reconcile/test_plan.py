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

import dataclasses
import uuid

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from oslotest import base

from tests.unit.reconcile import simulate
from vifagent import binding as binding_mod
from vifagent.reconcile import plan as plan_mod
from vifagent import state

OWNER = 'compute-1'
BRIDGE = 'br-int'


def make_binding(port_id=None, **extra):
    data = {'port_id': port_id or str(uuid.uuid4()),
            'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': str(uuid.uuid4()),
            'network_id': str(uuid.uuid4()),
            'mtu': 1450}
    data.update(extra)
    return binding_mod.Binding.from_dict(data)


def healthy(port, tap_index=None):
    """The Observed state of a complete, correct chain for ``port``."""
    names = port.devices
    alias = state.alias_for(port.port_id)
    mtu = port.binding.mtu
    links = {
        names.qbr: state.Link(name=names.qbr, index=1, kind='bridge',
                              alias=alias, up=True, carrier=True, stp=0,
                              forward_delay=0, mcast_snooping=0, mtu=mtu),
        names.qvb: state.Link(name=names.qvb, index=2, kind='veth',
                              alias=alias, mtu=mtu, up=True, carrier=True,
                              master=1, peer=3, tx_checksum=False),
        names.qvo: state.Link(name=names.qvo, index=3, kind='veth',
                              alias=alias, mtu=mtu, up=True, carrier=True,
                              peer=2),
    }
    if port.tap:
        netns = port.binding.owns_tap
        links[port.tap] = state.Link(
            name=port.tap, index=4, kind='veth' if netns else 'tun',
            alias=alias if netns else None, mtu=mtu, up=True, carrier=True,
            master=1, peer=9 if netns else None,
            peer_netnsid=0 if netns else None)
    ovs = {names.qvo: state.OvsPort(
        name=names.qvo, bridge=BRIDGE, tag=port.tag,
        other_config={'net_uuid': port.binding.network_id},
        external_ids=plan_mod.ovs_external_ids(port.binding, OWNER),
        ofport=7)}
    return state.Observed(links=links, ovs_ports=ovs)


def ops(plan, port_id):
    """A port's planned link operations in their wire form."""
    return [op.encode() for op in plan.link_ops.get(port_id, [])]


def plug(ports, observed):
    return plan_mod.plan_plug(ports, observed, OWNER, BRIDGE)


class TestPlanPlug(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.port = state.DesiredPort.for_binding(make_binding(), vlan=5,
                                                  tap='vnet3')
        self.names = self.port.devices
        self.reset()

    def reset(self):
        self.obs = healthy(self.port)

    def change_link(self, name, **changes):
        self.obs.links[name] = dataclasses.replace(self.obs.links[name],
                                                   **changes)

    def change_ovs(self, **changes):
        name = self.names.qvo
        self.obs.ovs_ports[name] = dataclasses.replace(
            self.obs.ovs_ports[name], **changes)

    def assertOps(self, expected, plan):
        self.assertEqual(expected, ops(plan, self.port.port_id))

    def test_healthy_chain_plans_nothing(self):
        plan = plug([self.port], self.obs)
        self.assertTrue(plan.empty())
        self.assertEqual({}, plan.repairs)

    def test_fresh_chain(self):
        plan = plug([self.port], state.Observed())
        n, alias = self.names, state.alias_for(self.port.port_id)
        self.assertEqual([
            ['create_bridge', n.qbr], ['disable_ipv6', n.qbr],
            ['set_alias', n.qbr, alias], ['set_up', n.qbr],
            ['create_veth', n.qvb, n.qvo, 1450],
            ['tx_checksum_off', n.qvb], ['set_alias', n.qvb, alias],
            ['set_master', n.qvb, n.qbr], ['set_up', n.qvb],
            ['set_alias', n.qvo, alias], ['set_up', n.qvo],
        ], ops(plan, self.port.port_id))
        self.assertEqual(1, len(plan.ovs_adds))
        add = plan.ovs_adds[0]
        self.assertEqual(n.qvo, add.name)
        self.assertEqual(5, add.tag)
        self.assertEqual({'net_uuid': self.port.binding.network_id},
                         add.other_config)
        self.assertEqual(OWNER, add.external_ids[state.OWNER_KEY])
        self.assertEqual(self.port.port_id, add.external_ids['iface-id'])
        self.assertEqual('active', add.external_ids['iface-status'])

    def test_admin_down_uses_dead_vlan(self):
        port = state.DesiredPort.for_binding(
            make_binding(admin_state_up=False), vlan=5)
        plan = plug([port], state.Observed())
        self.assertEqual(binding_mod.DEAD_VLAN, plan.ovs_adds[0].tag)

    # Each drift kind maps to the minimal repair.
    def test_qbr_missing(self):
        del self.obs.links[self.names.qbr]
        plan = plug([self.port], self.obs)
        n, alias = self.names, state.alias_for(self.port.port_id)
        self.assertOps([['create_bridge', n.qbr], ['disable_ipv6', n.qbr],
                        ['set_alias', n.qbr, alias], ['set_up', n.qbr],
                        ['set_master', n.qvb, n.qbr],
                        ['set_master', 'vnet3', n.qbr]], plan)
        self.assertEqual([], plan.deletes)

    def test_qvo_missing_recreates_pair(self):
        del self.obs.links[self.names.qvo]
        plan = plug([self.port], self.obs)
        self.assertEqual([self.names.qvb], plan.deletes)
        self.assertIn(['create_veth', self.names.qvb, self.names.qvo, 1450],
                      ops(plan, self.port.port_id))
        self.assertEqual(['veth_broken', 'ovs_readd'],
                         plan.repairs[self.port.port_id])
        # The OVS port is removed and added again, or the userspace
        # datapath keeps the old device open.
        self.assertEqual([self.names.qvo], plan.ovs_deletes)
        self.assertEqual([self.names.qvo],
                         [a.name for a in plan.ovs_adds])

    def test_pair_missing(self):
        del self.obs.links[self.names.qvo]
        del self.obs.links[self.names.qvb]
        plan = plug([self.port], self.obs)
        self.assertEqual([], plan.deletes)
        self.assertEqual(['veth_missing', 'ovs_readd'],
                         plan.repairs[self.port.port_id])

    def test_device_down(self):
        for name in (self.names.qbr, self.names.qvb, self.names.qvo,
                     'vnet3'):
            with self.subTest(name=name):
                self.reset()
                self.change_link(name, up=False)
                self.assertOps([['set_up', name]],
                               plug([self.port], self.obs))

    def test_mtu_changed(self):
        for name in (self.names.qvb, self.names.qvo, 'vnet3'):
            with self.subTest(name=name):
                self.reset()
                self.change_link(name, mtu=9000)
                self.assertOps([['set_mtu', name, 1450]],
                               plug([self.port], self.obs))

    def test_qvb_out_of_bridge(self):
        for master in (None, 55):
            self.change_link(self.names.qvb, master=master)
            self.assertOps([['set_master', self.names.qvb, self.names.qbr]],
                           plug([self.port], self.obs))

    def test_tap_out_of_bridge(self):
        self.change_link('vnet3', master=None)
        self.assertOps([['set_master', 'vnet3', self.names.qbr]],
                       plug([self.port], self.obs))

    def test_offload_on(self):
        self.change_link(self.names.qvb, tx_checksum=True)
        self.assertOps([['tx_checksum_off', self.names.qvb]],
                       plug([self.port], self.obs))

    def test_bridge_options(self):
        for change in ({'stp': 1}, {'forward_delay': 1500},
                       {'mcast_snooping': 1}):
            self.reset()
            self.change_link(self.names.qbr, **change)
            self.assertOps([['set_bridge_options', self.names.qbr]],
                           plug([self.port], self.obs))

    def test_ipv6_enabled(self):
        self.change_link(self.names.qbr, ipv6_disabled=False)
        self.assertOps([['disable_ipv6', self.names.qbr]],
                       plug([self.port], self.obs))

    def test_adopts_unmarked_chain(self):
        for name in (self.names.qbr, self.names.qvb, self.names.qvo):
            self.change_link(name, alias=None)
        plan = plug([self.port], self.obs)
        alias = state.alias_for(self.port.port_id)
        self.assertOps([['set_alias', n, alias] for n in
                        (self.names.qbr, self.names.qvb, self.names.qvo)],
                       plan)
        self.assertEqual([], plan.deletes)

    def test_libvirt_tap_never_marked(self):
        self.change_link('vnet3', alias=None)
        self.assertTrue(plug([self.port], self.obs).empty())

    def test_libvirt_tap_on_its_qbr_is_only_verified(self):
        port = dataclasses.replace(self.port, tap_bridge=self.names.qbr)
        self.assertTrue(plug([port], self.obs).empty())
        self.change_link('vnet3', master=None)
        self.assertEqual([['set_master', 'vnet3', self.names.qbr]],
                         ops(plug([port], self.obs), port.port_id))

    def test_libvirt_tap_meant_for_another_bridge_is_refused(self):
        port = dataclasses.replace(self.port, tap_bridge='virbr0')
        self.change_link('vnet3', master=None)
        plan = plug([port], self.obs)
        self.assertIn('bridge virbr0', plan.conflicts[port.port_id])
        self.assertNotIn(port.port_id, plan.link_ops)

    def test_ovs_port_missing(self):
        del self.obs.ovs_ports[self.names.qvo]
        plan = plug([self.port], self.obs)
        self.assertEqual({}, plan.link_ops)
        self.assertEqual([self.names.qvo],
                         [a.name for a in plan.ovs_adds])

    def test_ovs_port_holding_a_stale_device_is_readded(self):
        self.change_ovs(ifindex=99)
        plan = plug([self.port], self.obs)
        self.assertEqual({}, plan.link_ops)
        self.assertEqual([self.names.qvo], plan.ovs_deletes)
        self.assertEqual(['ovs_readd'], plan.repairs[self.port.port_id])
        self.change_ovs(ifindex=3)  # the qvo's own ifindex
        self.assertTrue(plug([self.port], self.obs).empty())

    def test_ovs_port_on_other_bridge(self):
        self.change_ovs(bridge='br-other')
        plan = plug([self.port], self.obs)
        self.assertEqual([self.names.qvo], plan.ovs_deletes)
        self.assertEqual([self.names.qvo],
                         [a.name for a in plan.ovs_adds])

    def test_ovs_columns(self):
        self.change_ovs(tag=99, external_ids={'iface-id': 'x', 'keep': '1'},
                        other_config={})
        plan = plug([self.port], self.obs)
        self.assertEqual(1, len(plan.ovs_updates))
        update = plan.ovs_updates[0]
        self.assertEqual(5, update.tag)
        self.assertEqual({'net_uuid': self.port.binding.network_id},
                         update.other_config)
        self.assertEqual(plan_mod.ovs_external_ids(self.port.binding, OWNER),
                         update.external_ids)

    def test_name_taken_by_other_kind_is_a_conflict(self):
        self.change_link(self.names.qbr, kind='dummy')
        plan = plug([self.port], self.obs)
        self.assertIn(self.port.port_id, plan.conflicts)
        self.assertEqual({}, plan.link_ops)
        self.assertEqual([], plan.deletes)

    def test_netns_tap(self):
        port = state.DesiredPort.for_binding(
            make_binding(vif_type='netns', netns='vm1'), vlan=3)
        plan = plug([port], state.Observed())
        self.assertIn(['create_netns_tap', port.devices.tap, 'vm1',
                       'fa:16:3e:00:00:01', 1450], ops(plan, port.port_id))
        self.assertEqual({port.port_id: 'vm1'}, plan.netns_up)
        obs = healthy(port)
        self.assertTrue(plug([port], obs).empty())
        obs.links[port.tap] = dataclasses.replace(obs.links[port.tap],
                                                  carrier=False)
        self.assertEqual({port.port_id: 'vm1'},
                         plug([port], obs).netns_up)


class TestPlanUnplug(base.BaseTestCase):

    def test_removes_only_marked(self):
        port = state.DesiredPort.for_binding(make_binding(), vlan=5,
                                             tap='vnet3')
        obs = healthy(port)
        plan = plan_mod.plan_unplug([port.port_id], obs)
        n = port.devices
        # qvo goes with its peer qvb; the libvirt tap is not touched.
        self.assertEqual([n.qvb, n.qbr], plan.deletes)
        self.assertEqual([n.qvo], plan.ovs_deletes)
        self.assertEqual([], plan.foreign)

    def test_unmarked_left_alone(self):
        port = state.DesiredPort.for_binding(make_binding(), vlan=5)
        obs = healthy(port)
        n = port.devices
        obs.links[n.qbr] = dataclasses.replace(obs.links[n.qbr], alias=None)
        obs.links[n.qvb] = dataclasses.replace(obs.links[n.qvb],
                                               alias='someone-else')
        obs.ovs_ports[n.qvo] = dataclasses.replace(obs.ovs_ports[n.qvo],
                                                   external_ids={})
        plan = plan_mod.plan_unplug([port.port_id], obs)
        self.assertEqual([n.qvo], plan.deletes)
        self.assertEqual([], plan.ovs_deletes)
        self.assertCountEqual([n.qbr, n.qvb, n.qvo], plan.foreign)

    def test_unknown_port_is_a_no_op(self):
        plan = plan_mod.plan_unplug([str(uuid.uuid4())], state.Observed())
        self.assertTrue(plan.empty())


# -- properties --------------------------------------------------------------

ALIASES = st.sampled_from(['ours', None, 'foreign', 'vifagent:other'])


@st.composite
def link_states(draw, name, kind_choices):
    present = draw(st.booleans())
    if not present:
        return None
    return dict(name=name,
                kind=draw(st.sampled_from(kind_choices)),
                alias=draw(ALIASES),
                mtu=draw(st.sampled_from([1400, 1450, 1500])),
                up=draw(st.booleans()),
                master=draw(st.sampled_from([None, 'qbr', 'other'])),
                paired=draw(st.booleans()),
                stp=draw(st.sampled_from([0, 1])),
                forward_delay=draw(st.sampled_from([0, 1500])),
                mcast_snooping=draw(st.sampled_from([0, 1])),
                ipv6_disabled=draw(st.booleans()),
                tx_checksum=draw(st.booleans()))


@st.composite
def scenarios(draw):
    """Random desired ports and a random, partly broken host."""
    count = draw(st.integers(1, 3))
    ports = []
    links = {}
    ovs_ports = {}
    index = iter(range(100, 10000))
    for i in range(count):
        netns = draw(st.booleans())
        b = make_binding(vif_type='netns', netns='ns%d' % i) if netns \
            else make_binding(admin_state_up=draw(st.booleans()))
        tap = None if netns else draw(st.sampled_from([None, 'vnet%d' % i]))
        port = state.DesiredPort.for_binding(b, vlan=i + 1, tap=tap)
        ports.append(port)
        n = port.devices
        alias = state.alias_for(port.port_id)
        raw = {}
        for name, kinds in ((n.qbr, ['bridge', 'bridge', 'dummy']),
                            (n.qvb, ['veth', 'veth', 'dummy']),
                            (n.qvo, ['veth', 'veth', 'dummy']),
                            (port.tap, ['veth' if netns else 'tun'])):
            if name is None:
                continue
            spec = draw(link_states(name, kinds))
            if spec is not None:
                raw[name] = spec
        for name, spec in raw.items():
            raw[name]['index'] = next(index)
        for name, spec in raw.items():
            fields = dict(name=name, index=spec['index'], kind=spec['kind'],
                          mtu=spec['mtu'], up=spec['up'], carrier=spec['up'],
                          ipv6_disabled=spec['ipv6_disabled'])
            fields['alias'] = {'ours': alias, 'foreign': 'eth-uplink'}.get(
                spec['alias'], spec['alias'])
            master = spec['master']
            if master == 'qbr' and n.qbr in raw:
                fields['master'] = raw[n.qbr]['index']
            elif master == 'other':
                fields['master'] = 7
            if spec['kind'] == 'bridge':
                fields.update(stp=spec['stp'],
                              forward_delay=spec['forward_delay'],
                              mcast_snooping=spec['mcast_snooping'])
            if spec['kind'] == 'veth':
                if name == port.tap:
                    fields.update(peer=1, peer_netnsid=0 if spec['paired']
                                  else None)
                else:
                    other = n.qvo if name == n.qvb else n.qvb
                    if spec['paired'] and other in raw and \
                            raw[other]['kind'] == 'veth':
                        fields['peer'] = raw[other]['index']
                        raw[other]['paired'] = True
                    else:
                        fields['peer'] = 5
                if name == n.qvb:
                    fields['tx_checksum'] = spec['tx_checksum']
            links[name] = state.Link(**fields)
        if draw(st.booleans()):
            ovs_ports[n.qvo] = state.OvsPort(
                name=n.qvo,
                bridge=draw(st.sampled_from([BRIDGE, 'br-x'])),
                tag=draw(st.sampled_from([None, 4095, i + 1])),
                other_config=draw(st.sampled_from(
                    [{}, {'net_uuid': b.network_id}])),
                external_ids=draw(st.sampled_from(
                    [{}, plan_mod.ovs_external_ids(b, OWNER)])),
                ofport=1)
    # A foreign decoy named like one of ours, for a port we do not hold.
    decoy = 'qbr' + str(uuid.uuid4())[:11]
    links[decoy] = state.Link(name=decoy, index=next(index), kind='bridge')
    return ports, state.Observed(links=links, ovs_ports=ovs_ports)


def _fix_veth_pairs(observed):
    """Make veth peer indexes symmetric, as the kernel guarantees."""
    links = dict(observed.links)
    by_index = {link.index: link for link in links.values()}
    for name, link in links.items():
        if link.kind == 'veth' and link.peer_netnsid is None:
            peer = by_index.get(link.peer)
            if peer is None or peer.peer != link.index:
                links[name] = dataclasses.replace(link, peer=5)
    return state.Observed(links=links, ovs_ports=observed.ovs_ports)


class TestPlanProperties(base.BaseTestCase):

    @settings(max_examples=300, deadline=None)
    @given(scenarios())
    def test_apply_then_plan_is_empty(self, scenario):
        ports, observed = scenario
        observed = _fix_veth_pairs(observed)
        plan = plug(ports, observed)
        after = simulate.apply(plan, observed, BRIDGE)
        again = plug(ports, after)
        for port in ports:
            if port.port_id in plan.conflicts:
                continue
            self.assertNotIn(port.port_id, again.link_ops)
            self.assertNotIn(port.port_id, again.netns_up)
            self.assertNotIn(port.port_id, again.repairs)

    @settings(max_examples=300, deadline=None)
    @given(scenarios())
    def test_only_our_names_are_touched(self, scenario):
        ports, observed = scenario
        observed = _fix_veth_pairs(observed)
        plan = plug(ports, observed)
        allowed = set()
        for port in ports:
            allowed.update((port.devices.qbr, port.devices.qvb,
                            port.devices.qvo))
            if port.tap:
                allowed.add(port.tap)
        for group in plan.link_ops.values():
            for op in group:
                self.assertIn(op.device, allowed)
        self.assertLessEqual(set(plan.deletes), allowed)
        # Never delete a libvirt tap.
        for port in ports:
            if port.tap and not port.binding.owns_tap:
                self.assertNotIn(port.tap, plan.deletes)

    @settings(max_examples=300, deadline=None)
    @given(scenarios())
    def test_unplug_deletes_only_marked(self, scenario):
        ports, observed = scenario
        ids = [p.port_id for p in ports]
        plan = plan_mod.plan_unplug(ids, observed)
        owners = {}
        for port in ports:
            for name in (port.devices.qbr, port.devices.qvb,
                         port.devices.qvo, port.devices.tap):
                owners[name] = port.port_id
        for name in plan.deletes:
            self.assertTrue(observed.links[name].owned_by(owners[name]))
        for name in plan.ovs_deletes:
            self.assertIn(state.OWNER_KEY,
                          observed.ovs_ports[name].external_ids)
        after = simulate.apply(plan, observed, BRIDGE)
        # Nothing marked for these ports is left.
        for name, link in after.links.items():
            if name in owners:
                self.assertFalse(link.owned_by(owners[name]), name)


class TestFindOrphans(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.bound = state.DesiredPort.for_binding(make_binding(), vlan=1)
        self.gone = state.DesiredPort.for_binding(make_binding(), vlan=2)
        self.other = state.DesiredPort.for_binding(make_binding(), vlan=3)
        self.obs = healthy(self.bound)
        for port, owner in ((self.gone, OWNER), (self.other, 'compute-2')):
            extra = healthy(port)
            for name, link in extra.links.items():
                self.obs.links[name] = dataclasses.replace(
                    link, index=link.index + 100)
            for name, ovs in extra.ovs_ports.items():
                ext = dict(ovs.external_ids)
                ext[state.OWNER_KEY] = owner
                self.obs.ovs_ports[name] = dataclasses.replace(
                    ovs, external_ids=ext)

    def test_only_our_owner_marker_makes_an_orphan(self):
        orphans, foreign = plan_mod.find_orphans(
            self.obs, [self.bound.port_id], OWNER)
        self.assertEqual([self.gone.port_id], orphans)
        # Another agent's marked devices are reported, not collected.
        o = self.other.devices
        self.assertEqual(sorted([o.qbr, o.qvb, o.qvo]), foreign)

    def test_tombstones_are_orphans(self):
        orphans, _ = plan_mod.find_orphans(
            self.obs, [self.bound.port_id], 'compute-9',
            tombstones=[self.other.port_id])
        self.assertEqual([self.other.port_id], orphans)

    def test_bound_ports_are_never_orphans_or_foreign(self):
        orphans, foreign = plan_mod.find_orphans(
            self.obs, [self.bound.port_id, self.gone.port_id], OWNER,
            tombstones=[self.bound.port_id])
        self.assertEqual([], orphans)
        for name in (self.bound.devices.qbr, self.gone.devices.qbr):
            self.assertNotIn(name, foreign)

    def test_unmarked_decoy_is_foreign(self):
        decoy = 'qbr' + str(uuid.uuid4())[:11]
        self.obs.links[decoy] = state.Link(name=decoy, index=999,
                                           kind='bridge')
        self.obs.links['vnet7'] = state.Link(name='vnet7', index=998)
        _, foreign = plan_mod.find_orphans(self.obs, [], OWNER)
        self.assertIn(decoy, foreign)
        self.assertNotIn('vnet7', foreign)
