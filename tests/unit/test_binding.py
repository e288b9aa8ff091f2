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

import string
import uuid

from hypothesis import given
from hypothesis import strategies as st
from oslotest import base

from vifagent import binding
from vifagent import exception

PORT = '4A1E6F3C-2B9D-4E7A-9C1F-0D2E3F4A5B6C'


def good(**overrides):
    data = {
        'port_id': PORT,
        'mac_address': 'FA:16:3E:00:00:01',
        'instance_uuid': str(uuid.uuid4()),
        'network_id': str(uuid.uuid4()),
    }
    data.update(overrides)
    return data


class TestDeviceNames(base.BaseTestCase):

    def test_names_are_nova_compatible(self):
        names = binding.device_names('4a1e6f3c-2b9d-4e7a-9c1f-0d2e3f4a5b6c')
        self.assertEqual('tap4a1e6f3c-2b', names.tap)
        self.assertEqual('qbr4a1e6f3c-2b', names.qbr)
        self.assertEqual('qvb4a1e6f3c-2b', names.qvb)
        self.assertEqual('qvo4a1e6f3c-2b', names.qvo)

    @given(st.uuids())
    def test_names_fit_ifnamsiz(self, value):
        for name in binding.device_names(str(value)).__dict__.values():
            self.assertEqual(14, len(name))


class TestBindingValid(base.BaseTestCase):

    def test_normalised(self):
        b = binding.Binding.from_dict(good(), default_mtu=1450)
        self.assertEqual(PORT.lower(), b.port_id)
        self.assertEqual('fa:16:3e:00:00:01', b.mac_address)
        self.assertEqual(1450, b.mtu)
        self.assertTrue(b.admin_state_up)
        self.assertEqual(0, b.revision)
        self.assertEqual('ovs_hybrid', b.vif_type)
        self.assertFalse(b.owns_tap)

    def test_round_trip(self):
        b = binding.Binding.from_dict(good(mtu=9000, revision=3,
                                           admin_state_up=False))
        self.assertEqual(b, binding.Binding.from_dict(b.to_dict()))

    def test_netns(self):
        b = binding.Binding.from_dict(good(vif_type='netns', netns='vm-1'))
        self.assertTrue(b.owns_tap)
        self.assertEqual('vm-1', b.to_dict()['netns'])
        self.assertEqual(b, binding.Binding.from_dict(b.to_dict()))

    def test_same_content_ignores_revision(self):
        a = binding.Binding.from_dict(good(revision=1))
        b = binding.Binding.from_dict(good(revision=2,
                                           instance_uuid=a.instance_uuid,
                                           network_id=a.network_id))
        self.assertTrue(a.same_content(b))
        c = binding.Binding.from_dict(dict(b.to_dict(), mtu=1400))
        self.assertFalse(a.same_content(c))

    def test_mtu_bounds_inclusive(self):
        for mtu in (68, 65535):
            self.assertEqual(mtu, binding.Binding.from_dict(
                good(mtu=mtu)).mtu)


BAD = [
    # (field that must be named, binding overrides)
    ('port_id', {'port_id': 'not-a-uuid'}),
    ('port_id', {'port_id': PORT.replace('-', '')}),
    ('port_id', {'port_id': '{%s}' % PORT}),
    ('port_id', {'port_id': 42}),
    ('port_id', {'port_id': None}),
    ('port_id', {'port_id': PORT + 'x' * 100}),
    ('instance_uuid', {'instance_uuid': 'vm1'}),
    ('network_id', {'network_id': ''}),
    ('mac_address', {'mac_address': '01:00:5e:00:00:01'}),
    ('mac_address', {'mac_address': 'ff:ff:ff:ff:ff:ff'}),
    ('mac_address', {'mac_address': 'fe:16:3e:00:00:01'}),
    ('mac_address', {'mac_address': '00:00:00:00:00:00'}),
    ('mac_address', {'mac_address': 'fa-16-3e-00-00-01'}),
    ('mac_address', {'mac_address': 'fa:16:3e:00:00'}),
    ('mac_address', {'mac_address': 'fa:16:3e:00:00:0g'}),
    ('mac_address', {'mac_address': ['fa:16:3e:00:00:01']}),
    ('mtu', {'mtu': 67}),
    ('mtu', {'mtu': 65536}),
    ('mtu', {'mtu': -1}),
    ('mtu', {'mtu': '1500'}),
    ('mtu', {'mtu': 1500.0}),
    ('mtu', {'mtu': True}),
    ('admin_state_up', {'admin_state_up': 'yes'}),
    ('admin_state_up', {'admin_state_up': 1}),
    ('revision', {'revision': -1}),
    ('revision', {'revision': 2 ** 63}),
    ('revision', {'revision': '3'}),
    ('vif_type', {'vif_type': 'ovs'}),
    ('netns', {'vif_type': 'netns'}),
    ('netns', {'vif_type': 'netns', 'netns': '../etc'}),
    ('netns', {'vif_type': 'netns', 'netns': 'a/b'}),
    ('netns', {'vif_type': 'netns', 'netns': '.hidden'}),
    ('netns', {'vif_type': 'netns', 'netns': 'n' * 65}),
    ('netns', {'netns': 'vm1'}),
    ('bogus', {'bogus': 1}),
    ('devname', {'devname': 'eth0'}),
]


class TestBindingInvalid(base.BaseTestCase):

    def test_table(self):
        for field, overrides in BAD:
            with self.subTest(field=field, overrides=overrides):
                e = self.assertRaises(exception.InvalidBinding,
                                      binding.Binding.from_dict,
                                      good(**overrides))
                self.assertEqual(field, e.field)
                self.assertIn(field, str(e))

    def test_missing_required(self):
        for field in ('port_id', 'mac_address', 'instance_uuid',
                      'network_id'):
            data = good()
            del data[field]
            e = self.assertRaises(exception.InvalidBinding,
                                  binding.Binding.from_dict, data)
            self.assertEqual(field, e.field)

    def test_not_a_mapping(self):
        for value in (None, [], 'port', 3, [('port_id', PORT)]):
            e = self.assertRaises(exception.InvalidBinding,
                                  binding.Binding.from_dict, value)
            self.assertEqual('binding', e.field)

    @given(st.text(max_size=80))
    def test_random_text_never_a_uuid_unless_one(self, text):
        try:
            value = binding.validate_uuid(text)
        except exception.InvalidBinding as e:
            self.assertEqual('port_id', e.field)
        else:
            self.assertEqual(str(uuid.UUID(text)), value)

    @given(st.text(alphabet=string.hexdigits + ':-', max_size=20))
    def test_random_mac(self, text):
        try:
            value = binding.validate_mac(text)
        except exception.InvalidBinding as e:
            self.assertEqual('mac_address', e.field)
        else:
            octets = [int(x, 16) for x in value.split(':')]
            self.assertEqual(6, len(octets))
            self.assertFalse(octets[0] & 1)
            self.assertNotEqual(0xfe, octets[0])

    @given(st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.none(), st.booleans(), st.integers(),
                  st.floats(allow_nan=False), st.text(max_size=40),
                  st.lists(st.integers(), max_size=3)),
        max_size=8))
    def test_random_mappings_fail_typed(self, data):
        # Arbitrary JSON-ish input either builds a binding or raises
        # InvalidBinding; never anything else.
        try:
            binding.Binding.from_dict(data)
        except exception.InvalidBinding as e:
            self.assertIsInstance(e.field, str)
            self.assertIn(repr(e.field), str(e))

    @given(st.integers())
    def test_random_mtu(self, mtu):
        try:
            b = binding.Binding.from_dict(good(mtu=mtu))
        except exception.InvalidBinding as e:
            self.assertEqual('mtu', e.field)
            self.assertFalse(68 <= mtu <= 65535)
        else:
            self.assertEqual(mtu, b.mtu)


# One-character mutations that make a canonical string a near miss: what a
# careless regular expression ($ matches before a final newline, \d takes
# any script's digits, .lower() folds other alphabets) lets through.
_NEAR = st.sampled_from(['\n', '\r', '\t', ' ', '\x00', '\u00a0', '\u0663',
                         '\uff10', '\u212a', 'g', '-', ':', 'İ'])


@st.composite
def near_misses(draw, canonical):
    """``canonical`` with one character added, replaced or removed."""
    value = draw(canonical)
    pos = draw(st.integers(0, len(value)))
    char = draw(_NEAR)
    how = draw(st.sampled_from(['insert', 'replace', 'append', 'prepend',
                                'drop']))
    if how == 'append':
        return value + char
    if how == 'prepend':
        return char + value
    if how == 'drop':
        return value[:pos] + value[pos + 1:] if value else char
    if how == 'replace' and pos < len(value):
        if value[pos] == char:
            char = '\n'
        return value[:pos] + char + value[pos + 1:]
    return value[:pos] + char + value[pos:]


_UUIDS = st.uuids().map(str)
_MACS = st.binary(min_size=6, max_size=6).map(
    lambda b: ':'.join('%02x' % x for x in bytes([b[0] & 0xfc]) + b[1:]))
_NETNS = st.from_regex(r'\Avifagent-[a-z0-9]{1,20}\Z')


class TestNearMisses(base.BaseTestCase):
    """Only the canonical form passes; anything one character off fails."""

    def test_trailing_newline_is_refused_everywhere(self):
        for field in ('port_id', 'instance_uuid', 'network_id'):
            self.assertRaises(exception.InvalidBinding, binding.Binding.
                              from_dict, good(**{field: PORT + '\n'}))
        self.assertRaises(exception.InvalidBinding, binding.Binding.
                          from_dict, good(mac_address='fa:16:3e:00:00:01\n'))
        self.assertRaises(exception.InvalidBinding, binding.Binding.
                          from_dict, good(vif_type='netns', netns='vm1\n'))

    @given(near_misses(_UUIDS))
    def test_uuid(self, value):
        try:
            uuid.UUID(value)
            canonical = len(value) == 36 and value.isascii() and \
                str(uuid.UUID(value)) == value.lower()
        except ValueError:
            canonical = False
        if canonical:
            self.assertEqual(value.lower(), binding.validate_uuid(value))
        else:
            self.assertRaises(exception.InvalidBinding,
                              binding.validate_uuid, value)

    @given(near_misses(_MACS))
    def test_mac(self, value):
        parts = value.split(':')
        canonical = (value.isascii() and len(parts) == 6 and
                     all(len(p) == 2 and all(c in string.hexdigits
                                             for c in p) for p in parts))
        if canonical and not int(parts[0], 16) & 1 and \
                parts[0].lower() != 'fe' and value != '00:00:00:00:00:00':
            self.assertEqual(value.lower(), binding.validate_mac(value))
        else:
            self.assertRaises(exception.InvalidBinding,
                              binding.validate_mac, value)

    @given(near_misses(_NETNS))
    def test_netns(self, value):
        canonical = value.isascii() and value.isprintable() and \
            ' ' not in value and bool(value) and value[0] not in '-.' and \
            all(c.isalnum() or c in '_.-' for c in value)
        if canonical:
            self.assertEqual(value, binding.validate_netns(value))
        else:
            self.assertRaises(exception.InvalidBinding,
                              binding.validate_netns, value)


GROUP = '7c3d1a2b-0000-4000-8000-00000000aaaa'


class TestPortSecurityFields(base.BaseTestCase):
    """API 1.1 binding fields: defaults, normal forms, exact errors."""

    def assertInvalid(self, field, **overrides):
        e = self.assertRaises(exception.InvalidBinding,
                              binding.Binding.from_dict, good(**overrides))
        self.assertEqual(field, e.field)

    def test_defaults_keep_the_1_0_form(self):
        b = binding.Binding.from_dict(good())
        self.assertFalse(b.port_security_enabled)
        self.assertEqual((), b.fixed_ips)
        for field in ('port_security_enabled', 'fixed_ips',
                      'allowed_address_pairs', 'security_groups'):
            self.assertNotIn(field, b.to_dict())

    def test_round_trip(self):
        b = binding.Binding.from_dict(good(
            port_security_enabled=True,
            fixed_ips=['10.0.0.5', '2001:DB8::5'],
            allowed_address_pairs=[
                {'ip_address': '10.1.0.9/24'},
                {'ip_address': '10.2.0.1',
                 'mac_address': 'FA:16:3E:00:00:02'}],
            security_groups=[GROUP.upper()]))
        self.assertEqual(('10.0.0.5', '2001:db8::5'), b.fixed_ips)
        self.assertEqual('10.1.0.0/24', b.allowed_address_pairs[0].ip_address)
        # A pair without a MAC uses the port's.
        self.assertEqual('fa:16:3e:00:00:01',
                         b.allowed_address_pairs[0].mac_address)
        self.assertEqual('fa:16:3e:00:00:02',
                         b.allowed_address_pairs[1].mac_address)
        self.assertEqual((GROUP,), b.security_groups)
        self.assertEqual(b, binding.Binding.from_dict(b.to_dict()))

    def test_errors_name_the_field(self):
        self.assertInvalid('port_security_enabled',
                           port_security_enabled='yes')
        self.assertInvalid('fixed_ips', fixed_ips='10.0.0.1')
        self.assertInvalid('fixed_ips', fixed_ips=['10.0.0.0/24'])
        self.assertInvalid('fixed_ips', fixed_ips=['10.0.0.300'])
        self.assertInvalid('fixed_ips', fixed_ips=['10.0.0.1', '10.0.0.1'])
        self.assertInvalid('fixed_ips', fixed_ips=[
            '10.0.%d.%d' % (i // 250, i % 250) for i in range(33)])
        self.assertInvalid('allowed_address_pairs.ip_address',
                           allowed_address_pairs=[{'ip_address': '10.0/x'}])
        self.assertInvalid('allowed_address_pairs.ip_address',
                           allowed_address_pairs=[{'mac_address':
                                                   'fa:16:3e:00:00:02'}])
        self.assertInvalid('allowed_address_pairs.mac_address',
                           allowed_address_pairs=[{'ip_address': '10.0.0.9',
                                                   'mac_address': 'ff'}])
        self.assertInvalid('allowed_address_pairs.color',
                           allowed_address_pairs=[{'ip_address': '10.0.0.9',
                                                   'color': 'red'}])
        self.assertInvalid('allowed_address_pairs', allowed_address_pairs=[
            {'ip_address': '10.0.0.%d' % i} for i in range(33)])
        self.assertInvalid('security_groups', port_security_enabled=True,
                           security_groups=['not-a-uuid'])
        self.assertInvalid('security_groups', port_security_enabled=True,
                           security_groups=[str(uuid.uuid4())
                                            for _ in range(17)])

    def test_groups_need_port_security(self):
        self.assertInvalid('security_groups', security_groups=[GROUP])
        self.assertInvalid('security_groups', port_security_enabled=False,
                           security_groups=[GROUP])
