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

from oslotest import base

from vifagent import exception
from vifagent import secgroup

GROUP = '7c3d1a2b-0000-4000-8000-00000000aaaa'
OTHER = '7c3d1a2b-0000-4000-8000-00000000bbbb'


def rule(**fields):
    data = {'direction': 'ingress', 'ethertype': 'IPv4'}
    data.update(fields)
    return data


def group(**fields):
    data = {'id': GROUP, 'rules': [rule()]}
    data.update(fields)
    return data


class TestSecurityGroup(base.BaseTestCase):

    def assertInvalid(self, field, data):
        e = self.assertRaises(exception.InvalidSecurityGroup,
                              secgroup.SecurityGroup.from_dict, data)
        self.assertEqual(field, e.field, str(e))

    def test_defaults_and_round_trip(self):
        g = secgroup.SecurityGroup.from_dict(group(
            id=GROUP.upper(),
            rules=[rule(protocol='tcp', port_range_min=22),
                   rule(protocol='icmp', port_range_min=8,
                        port_range_max=0),
                   rule(direction='egress', ethertype='IPv6',
                        remote_ip_prefix='2001:db8::1/64'),
                   rule(remote_group_id=OTHER, protocol=47)],
            members={'IPv4': ['10.0.0.2', '10.0.0.1'],
                     'IPv6': ['2001:DB8::1']}))
        self.assertEqual(GROUP, g.id)
        self.assertTrue(g.stateful)
        self.assertEqual(0, g.revision)
        self.assertEqual((22, 22), (g.rules[0].port_range_min,
                                    g.rules[0].port_range_max))
        self.assertEqual('2001:db8::/64', g.rules[2].remote_ip_prefix)
        self.assertEqual((('10.0.0.1', '10.0.0.2'), ('2001:db8::1',)),
                         g.members)
        self.assertEqual({OTHER}, g.remote_groups())
        self.assertEqual(g, secgroup.SecurityGroup.from_dict(g.to_dict()))

    def test_unknown_fields(self):
        self.assertInvalid('colour', group(colour='red'))
        self.assertInvalid('rules.port', group(rules=[rule(port=22)]))
        self.assertInvalid('members.IPv5', group(members={'IPv5': []}))

    def test_required_and_enumerations(self):
        self.assertInvalid('id', {'rules': []})
        self.assertInvalid('id', group(id='nope'))
        self.assertInvalid('revision', group(revision=-1))
        self.assertInvalid('stateful', group(stateful='yes'))
        self.assertInvalid('rules.direction',
                           group(rules=[{'ethertype': 'IPv4'}]))
        self.assertInvalid('rules.direction',
                           group(rules=[rule(direction='in')]))
        self.assertInvalid('rules.ethertype',
                           group(rules=[rule(ethertype='IPv5')]))
        self.assertInvalid('rules.protocol',
                           group(rules=[rule(protocol='sctp')]))
        self.assertInvalid('rules.protocol',
                           group(rules=[rule(protocol=256)]))
        self.assertInvalid('rules.protocol',
                           group(rules=[rule(protocol=True)]))

    def test_bad_cidrs(self):
        self.assertInvalid('rules.remote_ip_prefix',
                           group(rules=[rule(remote_ip_prefix='10.0.0/33')]))
        self.assertInvalid('rules.remote_ip_prefix',
                           group(rules=[rule(remote_ip_prefix='bad')]))
        self.assertInvalid('rules.remote_ip_prefix', group(rules=[
            rule(remote_ip_prefix='2001:db8::/64')]))
        self.assertInvalid('members.IPv4',
                           group(members={'IPv4': ['2001:db8::1']}))
        self.assertInvalid('members.IPv4',
                           group(members={'IPv4': ['10.0.0.0/24']}))

    def test_ports(self):
        self.assertInvalid('rules.port_range_min', group(rules=[
            rule(protocol='icmp', port_range_min=256)]))
        self.assertInvalid('rules.port_range_max', group(rules=[
            rule(protocol='icmp', port_range_min=8, port_range_max=256)]))
        self.assertInvalid('rules.port_range_min', group(rules=[
            rule(protocol='tcp', port_range_min=100, port_range_max=99)]))
        self.assertInvalid('rules.port_range_min', group(rules=[
            rule(protocol=47, port_range_min=1)]))
        self.assertInvalid('rules.port_range_max', group(rules=[
            rule(port_range_max=1)]))
        self.assertInvalid('rules.port_range_min', group(rules=[
            rule(protocol='udp', port_range_min=0)]))
        self.assertInvalid('rules.port_range_max', group(rules=[
            rule(protocol='udp', port_range_min=1, port_range_max=65536)]))

    def test_family_mismatch(self):
        self.assertInvalid('rules.protocol', group(rules=[
            rule(ethertype='IPv6', protocol='icmp')]))
        self.assertInvalid('rules.protocol', group(rules=[
            rule(protocol='icmpv6')]))

    def test_remote_fields_exclusive(self):
        self.assertInvalid('rules.remote_ip_prefix', group(rules=[
            rule(remote_ip_prefix='10.0.0.0/8', remote_group_id=OTHER)]))
        self.assertInvalid('rules.remote_group_id', group(rules=[
            rule(remote_group_id='x')]))

    def test_limits(self):
        self.assertInvalid('rules', group(rules=[
            rule(protocol='tcp', port_range_min=i + 1)
            for i in range(secgroup.MAX_RULES + 1)]))
        self.assertInvalid('members', group(members={'IPv4': [
            '10.%d.%d.%d' % (i >> 16, (i >> 8) & 255, i & 255)
            for i in range(secgroup.MAX_MEMBERS + 1)]}))

    def test_parse_many_is_all_or_nothing(self):
        self.assertRaises(exception.InvalidSecurityGroup,
                          secgroup.parse_many, [group(), group(id='x')])
        e = self.assertRaises(exception.InvalidSecurityGroup,
                              secgroup.parse_many, [group(), group()])
        self.assertEqual('id', e.field)
        self.assertEqual(2, len(secgroup.parse_many(
            [group(), group(id=OTHER)])))
