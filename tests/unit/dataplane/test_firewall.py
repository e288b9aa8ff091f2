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

"""Rendering, parsing and planning of port filters: pure, no root."""

import dataclasses
import shlex

from oslotest import base

from vifagent import binding
from vifagent.dataplane import firewall as fw
from vifagent.privileged import guard
from vifagent import secgroup

PORT = '4a1e6f3c-2b9d-4e7a-9c1f-0d2e3f4a5b6c'
PORT2 = '5b2f7a4d-3c0e-4f8b-8d2a-1e3f4a5b6c7d'
GROUP = '7c3d1a2b-0000-4000-8000-00000000aaaa'
REMOTE = '7c3d1a2b-0000-4000-8000-00000000bbbb'
OTHER = '8d4e2b3c-0000-4000-8000-00000000cccc'
KEY = '4a1e6f3c-2b'
GIN = 'vfa-gi-7c3d1a2b-0000-4000-80'
GOUT = 'vfa-go-7c3d1a2b-0000-4000-80'
TO_VM, FROM_VM_PRE, FROM_VM = secgroup.COMMON_CHAINS


def make_binding(port_id=PORT, **fields):
    data = {'port_id': port_id, 'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': port_id, 'network_id': port_id,
            'port_security_enabled': True, 'fixed_ips': ['10.0.0.1'],
            'security_groups': [GROUP]}
    data.update(fields)
    return binding.Binding.from_dict(data)


def make_group(group_id=GROUP, stateful=True, rules=None, members=None):
    return secgroup.SecurityGroup.from_dict({
        'id': group_id, 'stateful': stateful,
        'rules': rules if rules is not None else [
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'tcp', 'port_range_min': 22},
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'icmp'},
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'remote_group_id': REMOTE},
            {'direction': 'egress', 'ethertype': 'IPv4'}],
        'members': members or {}})


def port_filter(port_id=PORT, groups=None, zone=5, tap=None, **fields):
    groups = groups or (make_group(),)
    return fw.PortFilter(make_binding(port_id, **fields), zone,
                         tuple(groups), tap)


def save_text(ruleset):
    """What iptables-save and ipset save would print for a Ruleset."""
    dumps = {}
    for family in fw.FAMILIES:
        lines = []
        for table in fw.TABLES:
            builtin, hook = secgroup.HOOK_CHAINS[table]
            lines += ['*' + table, ':%s ACCEPT [0:0]' % builtin]
            chains = sorted(c for (f, t, c) in ruleset.chains
                            if (f, t) == (family, table))
            lines += [':%s - [0:0]' % c for c in chains]
            if (family, table) in ruleset.jumps:
                lines.append('-A %s -j %s' % (builtin, hook))
            for c in chains:
                lines += ['-A %s %s' % (c, r)
                          for r in ruleset.chains[(family, table, c)]]
            lines.append('COMMIT')
        dumps[family] = '\n'.join(lines) + '\n'
    sets = []
    for name, (family, members) in sorted(ruleset.sets.items()):
        sets.append('create %s hash:ip family %s hashsize 1024' % (
            name, 'inet' if family == 4 else 'inet6'))
        sets += ['add %s %s' % (name, m) for m in sorted(members)]
    dumps['ipset'] = '\n'.join(sets)
    dumps['sysctls'] = {n: '1' for n in fw.SYSCTLS}
    dumps['arp'] = nft_text(ruleset)
    return dumps


def nft_text(ruleset):
    """What nft list table bridge vifagent would print."""
    if not (ruleset.arp or ruleset.arp_map or ruleset.arp_base):
        return ''
    elements = ',\n\t\t\t     '.join(
        '"%s" : jump %s' % kv for kv in sorted(ruleset.arp_map.items()))
    lines = ['table bridge vifagent {', '\tmap vfa-arp {',
             '\t\ttype ifname : verdict']
    if elements:
        lines.append('\t\telements = { %s }' % elements)
    lines += ['\t}', '', '\tchain vifagent-FORWARD {',
              '\t\ttype filter hook forward priority 0; policy accept;']
    if ruleset.arp_base:
        lines.append('\t\tether type arp oifname vmap @vfa-arp')
    lines.append('\t}')
    for chain, rules in sorted(ruleset.arp.items()):
        lines += ['', '\tchain %s {' % chain]
        lines += ['\t\t' + r for r in rules]
        lines.append('\t}')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def groups_of(*groups):
    return {g.id: g for g in groups}


class TestRender(base.BaseTestCase):

    def render(self, *ports, groups=None):
        return fw.render(list(ports), groups or groups_of(
            make_group(), make_group(REMOTE, members={
                'IPv4': ['10.0.0.7']})))

    def test_port_security_objects_carry_the_port_id(self):
        rs = self.render(port_filter())
        names = {c for (_, _, c) in rs.chains}
        self.assertEqual({'vifagent-FORWARD', 'vifagent-PREROUTING',
                          'vfa-i' + KEY, 'vfa-o' + KEY, 'vfa-s' + KEY,
                          'vfa-z' + KEY, GIN, GOUT} |
                         set(secgroup.COMMON_CHAINS), names)
        self.assertTrue(all(secgroup.ours(n) for n in names))
        self.assertTrue(all(secgroup.chain_kind(n) for n in names))
        self.assertEqual({KEY}, rs.keys())

    def test_dispatch_by_qvb(self):
        rs = self.render(port_filter(tap='vnet7'))
        self.assertEqual((
            '-m physdev --physdev-in qvb%s --physdev-is-bridged -j vfa-i%s'
            % (KEY, KEY),
            '-m physdev --physdev-out qvb%s --physdev-is-bridged -j vfa-o%s'
            % (KEY, KEY)), rs.chains[(4, 'filter', 'vifagent-FORWARD')])
        self.assertEqual(('-i qvb%s -j vfa-z%s' % (KEY, KEY),
                          '-i vnet7 -j vfa-z%s' % KEY),
                         rs.chains[(6, 'raw', 'vifagent-PREROUTING')])
        self.assertEqual(('-j CT --zone 5',),
                         rs.chains[(4, 'raw', 'vfa-z' + KEY)])

    def test_anti_spoofing(self):
        rs = self.render(port_filter(allowed_address_pairs=[
            {'ip_address': '10.9.0.0/16', 'mac_address':
             'fa:16:3e:00:00:09'}]))
        # A source the port may use goes on to what is allowed from any
        # VM (a goto: no match there returns to the port's chain).
        self.assertEqual((
            '-s 10.0.0.1/32 -m mac --mac-source fa:16:3e:00:00:01 -g '
            + FROM_VM,
            '-s 10.9.0.0/16 -m mac --mac-source fa:16:3e:00:00:09 -g '
            + FROM_VM,
            '-j DROP'), rs.chains[(4, 'filter', 'vfa-s' + KEY)])
        self.assertEqual((
            '-s fe80::f816:3eff:fe00:1/128 -m mac --mac-source '
            'fa:16:3e:00:00:01 -g ' + FROM_VM,
            '-s fe80::f816:3eff:fe00:9/128 -m mac --mac-source '
            'fa:16:3e:00:00:09 -g ' + FROM_VM,
            '-j DROP'), rs.chains[(6, 'filter', 'vfa-s' + KEY)])
        # DHCP discovery before the source check, server replies dropped
        # after it: the port-independent parts are common chains.
        for family in fw.FAMILIES:
            self.assertEqual(
                ('-j ' + FROM_VM_PRE, '-j vfa-s' + KEY,
                 '-m conntrack --ctstate INVALID -j DROP'),
                rs.chains[(family, 'filter', 'vfa-o' + KEY)][:3])
        self.assertEqual(('-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m '
                          'udp --sport 68 --dport 67 -j ACCEPT',),
                         rs.chains[(4, 'filter', FROM_VM_PRE)])
        self.assertIn('-p udp -m udp --sport 67 --dport 68 -j DROP',
                      rs.chains[(4, 'filter', FROM_VM)])
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP',
                      rs.chains[(6, 'filter', FROM_VM_PRE)])
        self.assertNotIn('-p ipv6-icmp -m icmp6 --icmpv6-type 134 '
                         '-j ACCEPT', rs.chains[(6, 'filter', FROM_VM)])
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j ACCEPT',
                      rs.chains[(6, 'filter', TO_VM)])

    def test_group_rules_and_default_deny(self):
        rs = self.render(port_filter())
        into = rs.chains[(4, 'filter', 'vfa-i' + KEY)]
        self.assertEqual((
            '-j ' + TO_VM,
            '-m conntrack --ctstate INVALID -j DROP',
            '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
            '-j ' + GIN,
            '-j DROP'), into)
        self.assertEqual((
            '-p tcp -m tcp --dport 22 -j ACCEPT',
            '-p icmp -j ACCEPT',
            '-m set --match-set vfa-v4-7c3d1a2b-0000-4000-8000 src '
            '-j ACCEPT'), rs.chains[(4, 'filter', GIN)])
        self.assertEqual(('-p udp -m udp --sport 67 --dport 68 -j ACCEPT',),
                         rs.chains[(4, 'filter', TO_VM)])
        self.assertEqual('-j DROP', rs.chains[(6, 'filter',
                                               'vfa-o' + KEY)][-1])
        self.assertEqual((), rs.chains[(6, 'filter', GIN)])
        self.assertEqual({'vfa-v4-7c3d1a2b-0000-4000-8000':
                          (4, frozenset(['10.0.0.7']))}, rs.sets)

    def test_stateless_tracks_nothing(self):
        rs = self.render(port_filter(groups=[make_group(stateful=False)]))
        self.assertEqual(('-j CT --notrack',),
                         rs.chains[(4, 'raw', 'vfa-z' + KEY)])
        for chain in ('vfa-i', 'vfa-o'):
            self.assertFalse([r for r in rs.chains[(4, 'filter',
                                                    chain + KEY)]
                              if 'conntrack' in r])

    def test_icmp_type_code_and_ranges(self):
        g = make_group(rules=[
            {'direction': 'egress', 'ethertype': 'IPv4', 'protocol': 'icmp',
             'port_range_min': 8, 'port_range_max': 0},
            {'direction': 'egress', 'ethertype': 'IPv6',
             'protocol': 'icmpv6', 'port_range_min': 128},
            {'direction': 'egress', 'ethertype': 'IPv4', 'protocol': 'udp',
             'port_range_min': 1000, 'port_range_max': 2000,
             'remote_ip_prefix': '192.168.0.0/24'},
            {'direction': 'egress', 'ethertype': 'IPv4', 'protocol': 47}])
        rs = self.render(port_filter(groups=[g]))
        out = rs.chains[(4, 'filter', GOUT)]
        self.assertIn('-p icmp -m icmp --icmp-type 8/0 -j ACCEPT', out)
        self.assertIn('-d 192.168.0.0/24 -p udp -m udp --dport 1000:2000 '
                      '-j ACCEPT', out)
        self.assertIn('-p 47 -j ACCEPT', out)
        self.assertIn('-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT',
                      rs.chains[(6, 'filter', GOUT)])

    def test_arp_only_for_own_addresses(self):
        rs = self.render(port_filter(allowed_address_pairs=[
            {'ip_address': '10.9.0.0/16', 'mac_address':
             'fa:16:3e:00:00:09'}]))
        self.assertEqual((
            'arp saddr ether fa:16:3e:00:00:01 arp saddr ip 10.0.0.1 return',
            'arp saddr ether fa:16:3e:00:00:09 arp saddr ip 10.9.0.0/16 '
            'return',
            'drop'), rs.arp['vfa-a' + KEY])
        self.assertEqual({'qvb' + KEY: 'vfa-a' + KEY}, rs.arp_map)
        self.assertTrue(rs.arp_base)

    def test_no_ports_no_objects(self):
        rs = fw.render([], {})
        self.assertEqual({}, rs.chains)
        self.assertEqual(set(), rs.jumps)

    def test_a_group_is_rendered_once_for_all_its_ports(self):
        other = make_group(OTHER, rules=[
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'tcp', 'port_range_min': 22},
            {'direction': 'egress', 'ethertype': 'IPv6'}])
        rs = self.render(port_filter(groups=[make_group(), other]),
                         port_filter(PORT2, groups=[make_group(), other]))
        # The two ports jump to both groups, in the binding's order; a
        # rule both groups have is in each group's chain, not per port.
        other_in = secgroup.group_chain_name('i', OTHER)
        for key in (KEY, PORT2[:11]):
            self.assertEqual(
                ('-j ' + TO_VM,
                 '-m conntrack --ctstate INVALID -j DROP',
                 '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
                 '-j ' + GIN, '-j ' + other_in, '-j DROP'),
                rs.chains[(4, 'filter', 'vfa-i' + key)])
        self.assertEqual(('-p tcp -m tcp --dport 22 -j ACCEPT',),
                         rs.chains[(4, 'filter', other_in)])
        self.assertEqual(('-j ACCEPT',), rs.chains[
            (6, 'filter', secgroup.group_chain_name('o', OTHER))])
        # Every group has both directions in both families, empty or
        # not, so a rule change never touches the ports' chains.
        groups = [c for (_, _, c) in rs.chains
                  if secgroup.chain_kind(c) == 'group']
        self.assertEqual(2 * 2 * 2, len(groups))
        # Each group's rule is written once, whatever the number of ports.
        self.assertEqual(2, sum(
            rules.count('-p tcp -m tcp --dport 22 -j ACCEPT')
            for rules in rs.chains.values()))

    def test_group_and_common_chain_names(self):
        self.assertEqual(GIN, secgroup.group_chain_name('i', GROUP))
        self.assertEqual(28, len(GIN))
        self.assertEqual(GROUP[:21], secgroup.group_chain_id(GIN))
        self.assertEqual('group', secgroup.chain_kind(GOUT))
        self.assertEqual('port', secgroup.chain_kind('vfa-s' + KEY))
        self.assertEqual('hook', secgroup.chain_kind('vifagent-FORWARD'))
        for name in secgroup.COMMON_CHAINS:
            self.assertEqual('common', secgroup.chain_kind(name))
        for name in ('vfa-gx-7c3d1a2b-0000-4000-80', GIN[:-1],
                     GIN + '0', 'vfa-gi-7C3D1A2B-0000-4000-80',
                     'vfa-gi_7c3d1a2b-0000-4000-80', 'vfa-a' + KEY,
                     'vfa-x' + KEY, 'vfa-iABCDEFGHIJK', 'vifagent-OTHER',
                     'vfa-foo', 'FORWARD', None):
            self.assertIsNone(secgroup.chain_kind(name), name)


class TestPlan(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.groups = groups_of(make_group(), make_group(
            REMOTE, members={'IPv4': ['10.0.0.7', '10.0.0.8']}))
        self.ports = [port_filter(), port_filter(PORT2, zone=6)]
        self.desired = fw.render(self.ports, self.groups)

    def observed(self, ruleset=None, **changes):
        dumps = save_text(ruleset or self.desired)
        dumps.update(changes)
        return fw.parse(dumps, {'gre': 47})

    def test_fresh_host_writes_everything(self):
        batch = fw.plan(self.desired, fw.parse({}), None)
        # Three chains for each of the two ports, two for their group and
        # the three common ones; the hook chain is made apart, never
        # declared (a declaration flushes).
        self.assertEqual(3 * 2 + 2 + 3,
                         len(batch.table(4, 'filter').declare))
        self.assertNotIn('vifagent-FORWARD',
                         batch.table(4, 'filter').declare)
        self.assertTrue(batch.table(4, 'filter').create_hook)
        self.assertEqual('insert', batch.table(4, 'filter').hook)
        self.assertEqual(('base',), batch.arp[0])
        self.assertEqual([('vfa-v4-7c3d1a2b-0000-4000-8000', 4)],
                         batch.set_creates)
        self.assertEqual(list(fw.SYSCTLS), batch.sysctls)

    def test_healthy_round_trip_plans_nothing(self):
        self.assertTrue(fw.plan(self.desired, self.observed(), None).empty())
        self.assertTrue(fw.plan(self.desired, self.observed(),
                                {KEY}).empty())

    def test_protocol_names_read_back_as_numbers(self):
        ports = [port_filter(groups=[make_group(rules=[
            {'direction': 'egress', 'ethertype': 'IPv4', 'protocol': 47}])])]
        desired = fw.render(ports, {})
        dumps = save_text(desired)
        dumps[4] = dumps[4].replace('-p 47', '-p gre')
        self.assertTrue(fw.plan(desired, fw.parse(dumps, {'gre': 47}),
                                None).empty())

    def test_flushed_chain_is_rewritten_alone(self):
        drifted = dataclasses.replace(self.desired,
                                      chains=dict(self.desired.chains))
        drifted.chains[(4, 'filter', 'vfa-i' + KEY)] = ()
        batch = fw.plan(self.desired, self.observed(drifted), None)
        self.assertEqual(['vfa-i' + KEY], batch.table(4, 'filter').declare)
        self.assertEqual(1, batch.chains_written())
        self.assertEqual({KEY: ['fw_chain_drift']}, batch.repairs)

    def test_deleted_rule_and_jump(self):
        drifted = dataclasses.replace(self.desired,
                                      chains=dict(self.desired.chains),
                                      jumps=set(self.desired.jumps))
        hook = (6, 'filter', 'vifagent-FORWARD')
        drifted.chains[hook] = drifted.chains[hook][1:]
        drifted.jumps.discard((4, 'raw'))
        batch = fw.plan(self.desired, self.observed(drifted), None)
        ops6 = batch.table(6, 'filter')
        self.assertEqual([], ops6.declare)
        self.assertEqual([('vifagent-FORWARD',
                           self.desired.chains[hook][0])], ops6.append)
        self.assertEqual('insert', batch.table(4, 'raw').hook)
        self.assertEqual(0, batch.chains_written())

    def test_arp_drift(self):
        drifted = dataclasses.replace(self.desired, arp=dict(self.desired.arp),
                                      arp_map=dict(self.desired.arp_map))
        drifted.arp['vfa-a' + KEY] = ('drop',)
        del drifted.arp_map['qvb' + PORT2[:11]]
        batch = fw.plan(self.desired, self.observed(drifted), None)
        self.assertEqual([
            ('chain', 'vfa-a' + KEY, list(self.desired.arp['vfa-a' + KEY])),
            ('element', 'qvb' + PORT2[:11], 'vfa-a' + PORT2[:11])],
            batch.arp)
        self.assertTrue(all(t.empty() for t in batch.tables.values()))

    def test_membership_change_is_one_set_update(self):
        groups = groups_of(make_group(), make_group(
            REMOTE, members={'IPv4': ['10.0.0.8', '10.0.0.9']}))
        desired = fw.render(self.ports, groups)
        batch = fw.plan(desired, self.observed(), {KEY, PORT2[:11]})
        self.assertEqual(0, batch.chains_written())
        self.assertTrue(all(t.empty() for t in batch.tables.values()))
        self.assertEqual([('vfa-v4-7c3d1a2b-0000-4000-8000', '10.0.0.9')],
                         batch.set_adds)
        self.assertEqual([('vfa-v4-7c3d1a2b-0000-4000-8000', '10.0.0.7')],
                         batch.set_dels)
        self.assertEqual(1, batch.set_writes())

    def test_removing_a_port_touches_only_its_objects(self):
        desired = fw.render(self.ports[1:], self.groups)
        batch = fw.plan(desired, self.observed(), {KEY})
        ops = batch.table(4, 'filter')
        self.assertEqual(sorted(['vfa-i' + KEY, 'vfa-o' + KEY,
                                 'vfa-s' + KEY]), sorted(ops.destroy))
        self.assertEqual(2, len(ops.delete_rules))
        self.assertTrue(all(KEY in r for _, r in ops.delete_rules))
        self.assertEqual([], ops.append)
        self.assertIsNone(ops.hook)

    def test_scope_and_keep_protect_other_ports(self):
        desired = fw.render([], {})
        # A partial pass about another port removes nothing of these.
        self.assertTrue(fw.plan(desired, self.observed(),
                                {'00000000-00'}).empty())
        # The full pass keeps what it is told to keep.
        batch = fw.plan(fw.render(self.ports[1:], self.groups),
                        self.observed(), None, keep={KEY})
        self.assertTrue(batch.empty())

    def test_full_pass_collects_everything_when_nothing_is_filtered(self):
        batch = fw.plan(fw.render([], {}), self.observed(), None)
        ops = batch.table(4, 'filter')
        self.assertIn('vifagent-FORWARD', ops.destroy)
        self.assertEqual('delete', ops.hook)
        self.assertEqual([], ops.delete_rules)
        self.assertEqual(['vfa-v4-7c3d1a2b-0000-4000-8000'],
                         batch.set_destroys)

    def test_foreign_objects_are_invisible(self):
        dumps = save_text(self.desired)
        dumps[4] = dumps[4].replace(
            '*filter\n', '*filter\n:neutron-openvswi-FORWARD - [0:0]\n'
            ':DOCKER - [0:0]\n-A FORWARD -j DOCKER\n'
            '-A DOCKER -j ACCEPT\n', 1)
        dumps['ipset'] += '\ncreate NIPv4abc hash:ip family inet\n' \
            'add NIPv4abc 10.0.0.1'
        observed = fw.parse(dumps)
        self.assertFalse([c for (_, _, c) in observed.chains
                          if not secgroup.ours(c)])
        self.assertNotIn('NIPv4abc', observed.sets)
        self.assertTrue(fw.plan(self.desired, observed, None).empty())

    def test_differing(self):
        drifted = dataclasses.replace(self.desired,
                                      chains=dict(self.desired.chains))
        del drifted.chains[(4, 'filter', 'vfa-s' + KEY)]
        self.assertEqual({KEY}, fw.differing(
            self.desired, self.observed(drifted), {KEY, PORT2[:11]}))

    def drifted(self, **chains):
        result = dataclasses.replace(self.desired,
                                     chains=dict(self.desired.chains))
        result.chains.update(chains)
        return result

    def test_flushed_group_chain_is_rewritten_once(self):
        observed = self.observed(self.drifted(**{}))
        observed.chains[(4, 'filter', GIN)] = ()
        batch = fw.plan(self.desired, observed, {KEY, PORT2[:11]})
        self.assertEqual([GIN], batch.table(4, 'filter').declare)
        self.assertEqual(1, batch.chains_written())
        self.assertEqual({GIN: ['fw_chain_drift']}, batch.repairs)
        # Both ports jump to it: both are unfiltered until it is back.
        self.assertEqual({KEY, PORT2[:11]},
                         fw.differing(self.desired, observed,
                                      {KEY, PORT2[:11]}))

    def test_a_group_rule_change_writes_one_chain(self):
        changed = make_group(rules=[
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'tcp', 'port_range_min': 2222},
            {'direction': 'egress', 'ethertype': 'IPv4'}])
        ports = [port_filter(groups=[changed]),
                 port_filter(PORT2, zone=6, groups=[changed])]
        desired = fw.render(ports, self.groups)
        batch = fw.plan(desired, self.observed(), {KEY, PORT2[:11]})
        self.assertEqual([GIN], batch.table(4, 'filter').declare)
        self.assertEqual([(GIN, '-p tcp -m tcp --dport 2222 -j ACCEPT')],
                         batch.table(4, 'filter').append)
        self.assertEqual(1, batch.chains_written())
        self.assertTrue(all(t.empty() for (f, _), t in batch.tables.items()
                            if f == 6))
        # The rule that named the remote group's set was its last user.
        self.assertEqual(['vfa-v4-7c3d1a2b-0000-4000-8000'],
                         batch.set_destroys)

    def test_a_batch_names_the_parts_it_writes(self):
        self.assertEqual({4, 6, 'ipset', 'arp'},
                         fw.plan(self.desired, fw.parse({}), None).parts())
        observed = self.observed()
        observed.chains[(4, 'filter', GIN)] = ()
        self.assertEqual({4}, fw.plan(self.desired, observed, None).parts())
        self.assertEqual(set(), fw.plan(self.desired, self.observed(),
                                        None).parts())

    def test_a_partial_look_keeps_the_rest_of_the_last(self):
        before = self.observed()
        dumps = save_text(fw.render([], {}))
        fresh = fw.parse({4: dumps[4], 'sysctls': dumps['sysctls']})
        merged = fw.merge(fresh, before, {4})
        self.assertEqual(
            {k: v for k, v in before.chains.items() if k[0] == 6},
            {k: v for k, v in merged.chains.items() if k[0] == 6})
        self.assertFalse([k for k in merged.chains if k[0] == 4])
        self.assertEqual({(6, 'filter'), (6, 'raw')}, merged.jumps)
        self.assertEqual(before.sets, merged.sets)
        self.assertEqual(before.arp, merged.arp)
        self.assertEqual(before.arp_map, merged.arp_map)
        self.assertTrue(merged.arp_base)

    def test_a_group_chain_goes_with_its_last_port(self):
        # One port leaves: the group chain stays for the other.
        batch = fw.plan(fw.render(self.ports[1:], self.groups),
                        self.observed(), {KEY})
        self.assertNotIn(GIN, batch.table(4, 'filter').destroy)
        # The other one (whose port was not in the pass) too: it goes,
        # and the common chains stay, as the hook chains do.
        one = fw.render(self.ports[1:], self.groups)
        observed = self.observed(one)
        batch = fw.plan(fw.render([], {}), observed, {PORT2[:11]})
        ops = batch.table(4, 'filter')
        self.assertEqual(sorted([GIN, GOUT, 'vfa-i' + PORT2[:11],
                                 'vfa-o' + PORT2[:11],
                                 'vfa-s' + PORT2[:11]]),
                         sorted(ops.destroy))
        self.assertFalse(set(secgroup.COMMON_CHAINS) & set(ops.declare))
        self.assertEqual(['vfa-v4-7c3d1a2b-0000-4000-8000'],
                         batch.set_destroys)

    def test_a_group_chain_a_kept_port_jumps_to_stays(self):
        # The full pass without the group's ports, one of them kept (its
        # group is gone from the store, say): what it jumps to stays.
        batch = fw.plan(fw.render([], {}), self.observed(), None,
                        keep={KEY})
        ops = batch.table(4, 'filter')
        self.assertNotIn(GIN, ops.destroy)
        self.assertIn('vfa-i' + PORT2[:11], ops.destroy)
        self.assertEqual([], batch.set_destroys)

    def test_an_orphan_group_chain_is_collected(self):
        # A group chain no chain jumps to (its ports went while another
        # agent version ran, say) goes with the next pass that sees it.
        orphan = secgroup.group_chain_name('i', OTHER)
        observed = self.observed()
        observed.chains[(4, 'filter', orphan)] = ('-j ACCEPT',)
        batch = fw.plan(self.desired, observed, {KEY})
        self.assertEqual([orphan], batch.table(4, 'filter').destroy)

    def test_drifted_common_chain_is_rewritten(self):
        observed = self.observed()
        observed.chains[(6, 'filter', FROM_VM_PRE)] = ()
        batch = fw.plan(self.desired, observed, {KEY})
        self.assertEqual([FROM_VM_PRE], batch.table(6, 'filter').declare)
        self.assertEqual({KEY, PORT2[:11]},
                         fw.differing(self.desired, observed,
                                      {KEY, PORT2[:11]}))

    def test_full_collect_removes_common_chains_last(self):
        batch = fw.plan(fw.render([], {}), self.observed(), None)
        ops = batch.table(6, 'filter')
        for chain in secgroup.COMMON_CHAINS + (GIN, GOUT):
            self.assertIn(chain, ops.destroy)
        # All flushed before any is removed (one restore, in order).
        self.assertEqual(set(ops.destroy), set(ops.declare))

    def test_unknown_forms_with_our_prefix_are_not_read(self):
        dumps = save_text(self.desired)
        dumps[4] = dumps[4].replace(
            '*filter\n', '*filter\n:vfa-foo - [0:0]\n'
            ':vifagent-OTHER - [0:0]\n-A vifagent-OTHER -j ACCEPT\n', 1)
        observed = fw.parse(dumps)
        self.assertNotIn((4, 'filter', 'vfa-foo'), observed.chains)
        self.assertNotIn((4, 'filter', 'vifagent-OTHER'), observed.chains)
        self.assertTrue(fw.plan(fw.render([], {}), observed, None).encode())
        guard.check_firewall(fw.plan(fw.render([], {}), observed,
                                     None).encode())


class TestGuard(base.BaseTestCase):

    def batch(self, lines, table='filter'):
        return {'tables': [[4, table, lines]]}

    def test_a_planned_batch_passes(self):
        desired = fw.render([port_filter()], groups_of(make_group()))
        tables, sets, destroys, sysctls, arp = guard.check_firewall(
            fw.plan(desired, fw.parse({}), None).encode())
        self.assertEqual([4, 6], [f for f, _, _ in tables])
        self.assertEqual([('create', 'filter', 'vifagent-FORWARD'),
                          ('jump', 'filter', 'FORWARD', 'vifagent-FORWARD'),
                          ('create', 'raw', 'vifagent-PREROUTING'),
                          ('jump', 'raw', 'PREROUTING',
                           'vifagent-PREROUTING')], tables[0][1])
        self.assertNotIn(':vifagent-FORWARD', tables[0][2])
        self.assertIn('create vfa-v4-7c3d1a2b-0000-4000-8000 hash:ip '
                      'family inet', sets)
        self.assertIn('add element bridge vifagent vfa-arp { "qvb%s" : '
                      'jump vfa-a%s }' % (KEY, KEY), arp)

    def test_group_and_common_chains_pass(self):
        tables = guard.check_firewall(self.batch([
            [':', GIN], ['-A', GIN, '-p tcp -m tcp --dport 22 -j ACCEPT'],
            [':', TO_VM], ['-A', 'vfa-i' + KEY, '-j ' + GIN],
            ['-A', 'vfa-i' + KEY, '-j ' + TO_VM], ['-X', GOUT]]))[0]
        self.assertIn('-A vfa-i%s -j %s' % (KEY, GIN), tables[0][2])

    def test_rules_are_read_as_iptables_restore_reads_them(self):
        desired = fw.render([port_filter(allowed_address_pairs=[
            {'ip_address': 'fd00::/64'}])], groups_of(make_group()))
        for rules in desired.chains.values():
            for rule in rules:
                self.assertEqual(shlex.split(rule), guard._words(rule))
        for spec in ('-m comment --comment "a b" -j ACCEPT',
                     "-s 10.0.0.1  -j  'ACCEPT'"):
            self.assertEqual(shlex.split(spec), guard._words(spec))
        # Quoting or escaping cannot hide a foreign target.
        for spec in ('-j "DOCKER"', "-j 'FORWARD'", '-j DOC\\KER',
                     '-j\tDOCKER', '-j "vfa-i%s" -j FORWARD' % KEY):
            self.assertRaises(guard.Refused, guard.check_firewall,
                              self.batch([['-A', 'vfa-i' + KEY, spec]]))
        self.assertRaises(guard.Refused, guard.check_firewall,
                          self.batch([['-A', 'vfa-i' + KEY, '-j "ACCEPT']]))

    def test_refusals(self):
        chain = 'vfa-i' + KEY
        for lines in ([[':', 'FORWARD']], [[':', 'DOCKER']],
                      [['-A', 'FORWARD', '-j ACCEPT']],
                      [['-D', 'neutron-openvswi-FORWARD', '-j ACCEPT']],
                      [['-X', 'INPUT']],
                      [['-A', chain, '-j DOCKER']],
                      [['-A', chain, '-j ACCEPT\n-F FORWARD']],
                      [['-A', chain, '-m set --match-set other src '
                        '-j ACCEPT']],
                      # Our prefix, not one of our forms.
                      [[':', 'vfa-iabc']], [[':', 'vifagent-OTHER']],
                      [['-A', chain, '-j vfa-gi-x']],
                      [['-X', 'vfa-gz-7c3d1a2b-0000-4000-80']],
                      [['-A', chain, '-j vfa-a' + KEY]],
                      [['hook', 'flush']], [['-P', 'FORWARD', 'DROP']]):
            self.assertRaises(guard.Refused, guard.check_firewall,
                              self.batch(lines))
        self.assertRaises(guard.Refused, guard.check_firewall,
                          self.batch([], table='nat'))
        self.assertRaises(guard.Refused, guard.check_firewall,
                          {'sets': [['add', 'NIPv4x', '10.0.0.1']]})
        self.assertRaises(guard.Refused, guard.check_firewall,
                          {'sets': [['add', 'vfa-v4-x', '10.0.0.1 -exist']]})
        self.assertRaises(guard.Refused, guard.check_firewall,
                          {'destroy_sets': ['docker-set']})
        self.assertRaises(guard.Refused, guard.check_firewall,
                          {'sysctls': ['net.ipv4.ip_forward']})
        for op in (['chain', 'FORWARD', ['drop']],
                   ['chain', 'vfa-a' + KEY, ['accept']],
                   ['chain', 'vfa-a' + KEY, ['drop; flush ruleset']],
                   ['element', 'eth0', 'vfa-a' + KEY],
                   ['element', 'qvb' + PORT2[:11], 'vfa-a' + KEY],
                   ['delete_element', 'eth0'],
                   ['delete_chain', 'vifagent-FORWARD'],
                   ['flush']):
            self.assertRaises(guard.Refused, guard.check_firewall,
                              {'arp': [op]})
