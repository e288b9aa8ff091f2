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

"""Hostile RPC payloads against a real agent, each one judged.

The README promises that arguments are untrusted: every bad request gets
a typed error and changes nothing on the host. This module measures that
over the real bus. ``Session`` drives one running ``vifagent-agent``
(an ``AgentFixture``) with payloads that hypothesis draws from
``Strategies``: mostly near-valid bindings with one or more fields
corrupted, so that validation deep inside (stale revisions, device-name
clashes, one VM NIC bound twice) is reached, and wholly random JSON
values, hostile names (eth0, br-int, ``../``, NUL, newlines, unicode),
huge strings and numbers, and unknown or missing keyword arguments.

Each reply is classified:

* a **typed error**: a ``vifagent.exception`` class, or, for a call with
  unknown or missing keyword arguments, the TypeError the server's
  dispatcher raises (oslo.messaging rebuilds builtin errors as such);
* **accepted**: a valid answer of the right shape, to a payload the one
  validation path (``vifagent.binding``, run here too) calls valid;
* a **failure**: no answer (MessagingTimeout), the agent exiting, any
  other error, an answer of the wrong shape, an invalid payload accepted,
  or anything left of an accepted payload once it was undone.

Around every payload the part of the host it could reach is read before
and after (``HostView``); the whole host cannot be compared, as other
tests create and delete devices beside this one. For a typed error or a
read, a difference is a **host change**. An accepted payload that may
change state (bind, sync, network update, unbinding a bound port) is
undone at once: ports it added are unbound and a resident port (a few
are kept bound for payloads to collide with) it removed or changed is
bound again, so the next payload starts from the same host; the host
must then be as it was before the payload. A decoy, a port id whose qbr
and tap names unmarked devices already carry (as another's would), is
watched all along: only binding that very port may adopt them.

``network_update`` is a fanout cast in the API; here it is called on the
agent's own topic instead (the same endpoint method runs), so that its
refusals can be seen and classified too.

``drive()`` runs the payloads under hypothesis ``@given`` with a seed, so
that the functional test and ``python -m benchmarks.fuzz`` share one
generator. Port ids are salted per run: two runs beside each other
never name the same devices, even with the same seed.
"""

import codecs
import collections
import dataclasses
import json
import os
import re
import socket
import struct
import subprocess
import time
import urllib.parse
import uuid

import hypothesis
from hypothesis import strategies as st
import kombu
from oslo_config import cfg
import oslo_messaging as messaging
from oslo_serialization import jsonutils

from tests.functional import agent_fixture
from vifagent import binding as binding_mod
from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)
from vifagent import exception
from vifagent.kernel import rtnl
from vifagent import rpc
from vifagent import state

#: Every method of API 1.0 and its keyword arguments.
METHODS = collections.OrderedDict([
    ('bind_port', ('binding',)),
    ('unbind_port', ('port_id',)),
    ('get_port', ('port_id',)),
    ('sync_ports', ('bindings',)),
    ('network_update', ('network_id', 'mtu')),
    ('list_ports', ()),
    ('get_agent_state', ()),
])
#: Methods whose accepted payloads may change the host (then undone).
WRITES = ('bind_port', 'unbind_port', 'sync_ports', 'network_update')
FIELDS = ('port_id', 'mac_address', 'instance_uuid', 'network_id', 'mtu',
          'admin_state_up', 'revision', 'vif_type', 'netns')
#: The revision of resident ports: payloads below it must be refused.
RESIDENT_REVISION = 10
#: Seconds a call may take before it counts as a hang.
CALL_TIMEOUT = 30
#: Seconds the agent gets to finish what a slow ovs-vswitchd held up.
RECOVER_TIMEOUT = 60
#: Largest payload sent, in bytes of JSON: RabbitMQ's default limit is
#: 128 MiB, and a bigger message never reaches the agent.
MAX_MESSAGE = 16 * 2 ** 20
#: Most distinct strings of one payload whose names the host view reads.
MAX_STRINGS = 256
#: How the server's dispatcher words a call with wrong keyword arguments.
_ARGUMENT_ERROR = re.compile(r'unexpected keyword argument|missing \d+ '
                             r'required|multiple values for argument')

# -- values ------------------------------------------------------------------

#: Names and strings a hostile caller would try: other devices, paths,
#: whitespace, NUL, format strings, shell and SQL, look-alike unicode.
HOSTILE = (
    'eth0', 'lo', 'br-int', 'br-ex', 'br-tun', 'ovs-system', 'ovs-netdev',
    'virbr0', 'docker0', 'vnet0', 'bond0', 'eth0.100', 'veth0', 'gre0',
    '..', '.', '../', '../..', '../../etc/passwd', '/', '/etc/passwd',
    '/proc/self/ns/net', '/var/run/netns/../../etc', 'ns/../..', '~root',
    '', ' ', '  ', 'eth0 ', ' eth0', 'br int', 'qbr x', '\t', '\n', '\r\n',
    'eth0\n', '\neth0', 'eth0\r', '\x00', 'eth0\x00', '\x00eth0',
    'br-int\x00x', '\x7f', '\x1b[2J', '*', '?', '%', '%s%s%s', '%(field)s',
    '%n', '{0}', '{}', '\\', '\\x00', "'", '"', '`id`', '$(id)',
    '; ip link del eth0', '| reboot', "' OR '1'='1", 'NULL', 'None', 'null',
    'true', '0', '-1', 'NaN', 'default', 'all', 'self', 'vifagent:',
    'vifagent:eth0', 'qbr', 'qvb', 'qvo', 'tap', 'tapeth0', 'qvoeth0',
    '\uff45\uff54\uff48\uff10', 'eth\u200b0', '\ufeffeth0', '\u00e9th0',
    '\u0435th0', '\U0001f600', '\u202eeth0', '\u0130', '\u00df', '\ufb00',
    '\U0010ffff', '\u0660', 'ff:ff:ff:ff:ff:ff',
)
#: Integers at and around every bound the API has, and beyond.
EDGE_INTS = (0, 1, -1, 67, 68, 69, 1500, 4094, 4095, 4096, 65535, 65536,
             2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64,
             -2 ** 63, -2 ** 63 - 1, 10 ** 100, -10 ** 100, 10 ** 300)
#: Floats a JSON encoder lets through, NaN and infinities included.
EDGE_FLOATS = (0.0, -0.0, 1500.0, 1500.5, 68.0, 1e308, -1e308, 5e-324,
               float('nan'), float('inf'), float('-inf'))
#: Keys a binding must not have: look-alikes of fields, internals, others.
UNKNOWN_FIELDS = (
    'devname', 'surprise', 'bridge', 'integration_bridge', 'tap', 'qbr',
    'qvo', 'host', 'binding:host_id', 'vif_details', 'PORT_ID', 'port_id ',
    ' port_id', 'port_id\x00', 'Port_Id', '__class__', '__dict__', 'status',
    'vlan', 'tag', 'devices', 'name_key', 'data', 'ofport', 'external_ids',
    '', ' ', '\x00', '..', 'netns\n',
)
#: Keyword names to add to a call: others' arguments, the dispatcher's.
EXTRA_KWARGS = ('binding', 'bindings', 'port_id', 'network_id', 'mtu',
                'context', 'self', 'version', 'namespace', 'fanout',
                'server', 'timeout', 'kwargs', 'args', '__class__', 'host',
                'surprise', '')
#: What an oversized sync_ports carries: the list is refused before any
#: binding in it is looked at.
OVERSIZED = binding_mod.MAX_BINDINGS + 1


def _repeat(text, count):
    return text * count


def _uuid_variants(u):
    """Spellings of a canonical UUID: one is equivalent, the rest bad."""
    return (u.upper(), u[:-1], u + '0', u + '\n', '\n' + u, u + '\x00',
            u + ' ', ' ' + u, '{%s}' % u, u.replace('-', ''), 'urn:uuid:' + u,
            u.replace('-', '_'), u[:8] + u[9:], u[:-1] + 'g',
            u[:-1] + '\u0660', u.replace('a', '\uff41'), u + u, u[:14],
            '../' + u, u + '/..', u + '\t', u.replace('-', '\u2010'))


def _mac_variants(m):
    return (m.upper(), m.replace(':', '-'), m.replace(':', ''), m[:-3],
            m + ':00', m + '\n', ' ' + m, m[:-1] + 'g', m[:-2] + '1',
            m[:-2] + '001', '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff',
            '00:00:00:00:00:00', 'fe:16:3e:00:00:01', '33:33:00:00:00:01',
            m.replace(':', '.'), m + '\x00')


class Resident(collections.namedtuple(
        'Resident', 'port_id mac_address instance_uuid network_id')):
    """A port kept bound during the run, for payloads to collide with."""

    def binding(self):
        return {'port_id': self.port_id, 'mac_address': self.mac_address,
                'instance_uuid': self.instance_uuid,
                'network_id': self.network_id, 'mtu': 1450,
                'revision': RESIDENT_REVISION}


class Strategies:
    """Hypothesis strategies for one agent's payloads.

    ``bridge``, ``host``, ``residents`` and ``decoy`` are what hostile
    payloads aim at: the agent's own bridge and host name, the resident
    ports (their ids, networks, VM NICs and device names), and a port id
    whose qbr and tap names someone else's devices already carry.
    ``salt`` makes this run's port ids its own. ``payloads`` is the
    strategy of a whole call.
    """

    def __init__(self, bridge, host, residents, salt, decoy):
        self.residents = residents
        self.salt = salt
        targets = [bridge, host, decoy]
        targets += list(binding_mod.device_names(decoy).all())
        for r in residents:
            targets += list(binding_mod.device_names(r.port_id).all())
            targets += [r.port_id, r.network_id, state.alias_for(r.port_id)]
        hostile = st.sampled_from(HOSTILE + tuple(targets))
        text = st.text(st.characters(codec='utf-8'), max_size=40)
        huge = st.builds(
            _repeat,
            st.sampled_from(('x', '0', 'a-', 'f', '\u00e9', '\x00',
                             '\U0001f600', ' ', '\n', 'eth0')),
            st.sampled_from((15, 16, 64, 65, 255, 256, 4096, 65536,
                             100000)) | st.integers(0, 100000))
        self.strings = weighted((4, hostile), (3, text), (1, huge))
        self.ints = st.sampled_from(EDGE_INTS) | st.integers()
        self.floats = st.sampled_from(EDGE_FLOATS) | st.floats()
        scalars = st.one_of(st.none(), st.booleans(), self.ints,
                            self.floats, self.strings)
        keys = st.sampled_from(FIELDS + UNKNOWN_FIELDS) | text
        self.json = st.recursive(
            scalars,
            lambda inner: (st.lists(inner, max_size=5) |
                           st.dictionaries(keys, inner, max_size=5)),
            max_leaves=15)
        resident = st.sampled_from(residents)
        fresh = self.fresh_uuids()

        def spoiled(good, variants):
            """Mostly bad: a variant of a good value, or anything."""
            return weighted(
                (3, st.builds(_pick, good.map(variants),
                              st.integers(0, 99))),
                (2, self.strings), (1, self.json))

        own_ports = weighted(
            (6, fresh), (4, resident.map(lambda r: r.port_id)),
            (2, st.builds(lambda r, f: r.port_id[:11] + f[11:], resident,
                          fresh)),
            (1, st.just(decoy)))
        own_networks = weighted(
            (3, fresh), (2, resident.map(lambda r: r.network_id)))
        own_instances = weighted(
            (3, fresh), (1, resident.map(lambda r: r.instance_uuid)))
        bad_ports = spoiled(own_ports, _uuid_variants)
        bad_networks = spoiled(own_networks, _uuid_variants)
        self.port_ids = weighted((1, own_ports), (1, bad_ports))
        self.network_ids = weighted((1, own_networks), (1, bad_networks))
        good_mac = st.builds('fa:16:3e:{:02x}:{:02x}:{:02x}'.format,
                             st.integers(0, 255), st.integers(0, 255),
                             st.integers(0, 255))
        self.good_macs = weighted(
            (4, good_mac), (1, resident.map(lambda r: r.mac_address)),
            (1, st.builds('{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}'.format,
                          *[st.integers(0, 255)] * 6)))
        bad_macs = spoiled(self.good_macs, _mac_variants)
        self.good_mtus = st.sampled_from((68, 1280, 1450, 1500, 9000,
                                          65535)) | st.integers(68, 65535)
        bad_mtus = weighted(
            (3, self.ints), (1, self.floats),
            (1, st.sampled_from(('1500', '', ' 1500', '0x5dc', '1e3',
                                 True, False, [1500], {'mtu': 1500}))),
            (1, self.json))
        self.mtus = weighted((1, self.good_mtus), (1, bad_mtus))
        self.good_revisions = st.sampled_from(
            (0, RESIDENT_REVISION - 1, RESIDENT_REVISION,
             RESIDENT_REVISION + 1, binding_mod.MAX_REVISION)) | \
            st.integers(0, binding_mod.MAX_REVISION)
        bad_revisions = weighted(
            (3, self.ints), (1, self.floats),
            (1, st.sampled_from(('1', None, True, [1]))), (1, self.json))
        self.netns_names = weighted(
            (3, st.builds('fuzz-{:08x}'.format, st.integers(0, 2 ** 32))),
            (3, self.strings),
            (1, st.sampled_from(('.hidden', 'a/b', 'n' * 64, 'n' * 65,
                                 '-lead', '_ok', 'ok.', 'x\n')))) | self.json
        self.bad = {
            'port_id': bad_ports,
            'instance_uuid': spoiled(own_instances, _uuid_variants),
            'network_id': bad_networks,
            'mac_address': bad_macs,
            'mtu': bad_mtus,
            'admin_state_up': st.sampled_from(
                ('yes', 'no', 'true', 'false', 1, 0, None, '', [True])) |
            self.json,
            'revision': bad_revisions,
            'vif_type': st.sampled_from(
                ('ovs_hybrid', 'netns', 'OVS_HYBRID', 'ovs', 'netns ',
                 'bridge', 'vhostuser', 'tap', '', None, ['netns'])) |
            self.strings,
            'netns': self.netns_names,
        }
        self.valid_bindings = self._valid_bindings(fresh, resident, decoy)
        self.bindings = self._near_valid()
        self.payloads = self._payloads()

    def fresh_uuids(self):
        """Canonical UUIDs of this run: hypothesis's integer, salted."""
        return st.integers(0, 2 ** 128 - 1).map(
            lambda n: str(uuid.UUID(int=n ^ self.salt)))

    def _valid_bindings(self, fresh, resident, decoy):
        @st.composite
        def valid(draw):
            kind = draw(st.sampled_from(
                ('fresh',) * 5 + ('resident', 'clash', 'nic', 'network',
                                  'decoy')))
            r = draw(resident)
            data = {'port_id': draw(fresh), 'mac_address': draw(
                self.good_macs), 'instance_uuid': draw(fresh),
                'network_id': draw(fresh)}
            if kind == 'decoy':
                data['port_id'] = draw(st.sampled_from(
                    (decoy, decoy[:11] + data['port_id'][11:])))
            if kind == 'resident':
                data = r.binding()
                data['port_id'] = draw(st.sampled_from(
                    (r.port_id, r.port_id.upper())))
                for field, values in (('mac_address', self.good_macs),
                                      ('instance_uuid', fresh),
                                      ('network_id', fresh)):
                    if draw(st.booleans()):
                        data[field] = draw(values)
            elif kind == 'clash':
                # Another UUID with the resident's device names.
                data['port_id'] = r.port_id[:11] + data['port_id'][11:]
            elif kind == 'nic':
                data['instance_uuid'] = r.instance_uuid
                data['mac_address'] = draw(st.sampled_from(
                    (r.mac_address, r.mac_address.upper())))
            elif kind == 'network':
                data['network_id'] = r.network_id
            if draw(st.booleans()):
                data['mtu'] = draw(self.good_mtus)
            if draw(st.booleans()):
                data['admin_state_up'] = draw(st.booleans())
            if draw(st.booleans()):
                data['revision'] = draw(self.good_revisions)
            vif_type = draw(st.sampled_from((None, None, 'ovs_hybrid',
                                             'netns')))
            if vif_type is not None:
                data['vif_type'] = vif_type
            if vif_type == 'netns':
                data['netns'] = draw(st.builds('fuzz-{:08x}'.format,
                                               st.integers(0, 2 ** 32)))
            return data
        return valid()

    def _near_valid(self):
        """A valid binding, then 0 to 3 corruptions of its fields."""
        @st.composite
        def near(draw):
            data = draw(self.valid_bindings)
            count = draw(st.sampled_from((1, 1, 1, 1, 2, 2, 3, 0)))
            for _ in range(count):
                action = draw(st.sampled_from(
                    ('bad', 'bad', 'bad', 'drop', 'random', 'unknown')))
                field = draw(st.sampled_from(FIELDS))
                if action == 'drop':
                    data.pop(field, None)
                elif action == 'bad':
                    data[field] = draw(self.bad[field])
                elif action == 'random':
                    data[field] = draw(self.json)
                else:
                    key = draw(st.sampled_from(UNKNOWN_FIELDS) |
                               st.text(max_size=12))
                    data[key] = draw(self.json)
            return data
        return near()

    def _binding_arg(self):
        near = self.bindings
        return weighted(
            (20, near),
            (3, self.json),
            (1, near.map(lambda b: [b])),
            (1, near.map(lambda b: {'binding': b})),
            (1, near.map(lambda b: [[k, v] for k, v in b.items()])),
            (1, near.map(_json_text)),
            (1, st.sampled_from(({}, [], '', None, 0)) | self.strings))

    def _bindings_arg(self):
        near = self.bindings
        # What a list of ten thousand repeats: nothing big.
        small = st.one_of(st.none(), st.booleans(), st.integers(),
                          st.text(max_size=8), st.just({}),
                          self.valid_bindings)
        residents = [r.binding() for r in self.residents]
        listed = st.builds(
            lambda keep, more: (residents if keep else []) + more,
            st.booleans(), st.lists(near, max_size=4))
        return weighted(
            (12, listed),
            (2, near.map(lambda b: [b, b])),
            (2, near.map(lambda b: b)),
            (2, self.json),
            (1, st.builds(_repeat_list, small,
                          st.sampled_from((binding_mod.MAX_BINDINGS,
                                           OVERSIZED)))),
            (1, st.builds(self._oversized_valid, st.integers(0, 2 ** 64))))

    def _oversized_valid(self, start):
        """More valid bindings than one call may carry."""
        return [{'port_id': str(uuid.UUID(int=(start + i) ^ self.salt)),
                 'mac_address': 'fa:16:3e:00:00:01',
                 'instance_uuid': str(uuid.UUID(int=i)),
                 'network_id': self.residents[0].network_id}
                for i in range(OVERSIZED)]

    def _payloads(self):
        args = {
            'binding': self._binding_arg(),
            'bindings': self._bindings_arg(),
            'port_id': self.port_ids,
            'network_id': self.network_ids,
            'mtu': self.mtus,
        }
        extra_names = (st.sampled_from(EXTRA_KWARGS) |
                       st.text(max_size=10)).filter(
                           lambda k: k not in ('ctxt', 'method'))

        @st.composite
        def payload(draw):
            method = draw(st.sampled_from(
                ('bind_port',) * 7 + ('sync_ports',) * 3 +
                ('unbind_port',) * 2 + ('get_port',) * 2 +
                ('network_update',) * 3 + ('list_ports', 'get_agent_state')))
            params = METHODS[method]
            kwargs = {p: draw(args[p]) for p in params}
            mode = draw(st.sampled_from(
                ('ok',) * 17 + ('extra', 'missing', 'both')) if params
                else st.sampled_from(('ok', 'extra')))
            if mode in ('missing', 'both'):
                for p in draw(st.lists(st.sampled_from(params), min_size=1,
                                       unique=True)):
                    del kwargs[p]
            if mode in ('extra', 'both'):
                kwargs.update(draw(st.dictionaries(
                    extra_names, self.json, min_size=1, max_size=3)))
            return Payload(method, kwargs)
        # RabbitMQ refuses bigger messages before the agent sees them.
        return payload().filter(lambda p: p.size() <= MAX_MESSAGE)


def weighted(*choices):
    """One of several strategies, chosen by integer weight."""
    table = [s for w, s in choices for _ in range(w)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def _pick(options, index):
    return options[index % len(options)]


def _json_text(value):
    return json.dumps(value)


def _repeat_list(value, count):
    return [value] * count


class Payload(collections.namedtuple('Payload', 'method kwargs')):
    """One call: a method of the API and the keyword arguments it gets."""

    @property
    def argument_error(self):
        """True when the keyword names are not the method's own."""
        return set(self.kwargs) != set(METHODS[self.method])

    def valid(self, default_mtu=1500):
        """What vifagent's one validation path says of these arguments.

        Refusals that need the store (an older revision, a clash with a
        bound port) are not seen here: a valid payload may still get a
        typed error, but an invalid one must never be accepted.
        """
        if self.argument_error:
            return False
        kw = self.kwargs
        try:
            if self.method == 'bind_port':
                binding_mod.Binding.from_dict(kw['binding'], default_mtu)
            elif self.method in ('unbind_port', 'get_port'):
                binding_mod.validate_uuid(kw['port_id'])
            elif self.method == 'sync_ports':
                binding_mod.parse_many(kw['bindings'], default_mtu)
            elif self.method == 'network_update':
                binding_mod.validate_uuid(kw['network_id'], 'network_id')
                binding_mod.validate_mtu(kw['mtu'])
        except exception.InvalidBinding:
            return False
        return True

    def size(self):
        """Bytes of the arguments on the wire (JSON, as oslo sends them)."""
        return len(jsonutils.dumps(self.kwargs))

    def strings(self, limit=None):
        """Distinct strings of the payload, keys and values, nested or not.

        With ``limit``, the first ``limit`` found: an oversized list
        repeats itself, and the agent must refuse it before looking in.
        """
        found, todo = {}, collections.deque([self.kwargs])
        while todo and (limit is None or len(found) < limit):
            value = todo.popleft()
            if isinstance(value, str):
                found[value] = None
            elif isinstance(value, dict):
                todo.extend(value.keys())
                todo.extend(value.values())
            elif isinstance(value, list):
                todo.extend(value[:limit])
        return list(found)

    def describe(self, limit=2000):
        """The payload as Python, long strings and lists abridged."""
        text = '%s(%s)' % (self.method, ', '.join(
            '%s=%s' % (k, _short(v)) for k, v in self.kwargs.items()))
        return text if len(text) <= limit else text[:limit] + '...'


def _short(value):
    """repr() of a payload value, exact but for long strings and lists."""
    if isinstance(value, str):
        if len(value) > 80:
            if value == value[0] * len(value):
                return '%r * %d' % (value[0], len(value))
            return '%r... (%d chars)' % (value[:40], len(value))
        return repr(value)
    if isinstance(value, list):
        items = [_short(v) for v in value[:8]]
        if len(value) > 8:
            if all(v == value[0] for v in value):
                return '[%s] * %d' % (items[0], len(value))
            items.append('... (%d items)' % len(value))
        return '[%s]' % ', '.join(items)
    if isinstance(value, dict):
        return '{%s}' % ', '.join('%s: %s' % (_short(k), _short(v))
                                  for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(abs(value))
        if len(digits) > 30 and digits == '1' + '0' * (len(digits) - 1):
            return '%s10 ** %d' % ('-' if value < 0 else '', len(digits) - 1)
    return repr(value)


# -- what the host looks like ------------------------------------------------

class Ovsdb:
    """Consistent reads of OVSDB: JSON-RPC ``transact`` with selects.

    A reply reflects every transaction committed before it, unlike an IDL
    replica that may lag the agent's last change.
    """

    def __init__(self, remote, timeout=10):
        kind, _, where = remote.partition(':')
        if kind == 'unix':
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout)
            self._sock.connect(where)
        elif kind == 'tcp':
            host, _, port = where.rpartition(':')
            self._sock = socket.create_connection((host, int(port)),
                                                  timeout=timeout)
        else:
            raise ValueError('unsupported OVSDB remote %s' % remote)
        self._decoder = codecs.getincrementaldecoder('utf-8')()
        self._buffer = ''
        self._id = 0

    def close(self):
        self._sock.close()

    def select(self, queries):
        """Rows of each ``(table, where, columns)`` query, in one round."""
        self._id += 1
        ops = [{'op': 'select', 'table': t, 'where': w, 'columns': c}
               for t, w, c in queries]
        self._send({'method': 'transact', 'params': ['Open_vSwitch'] + ops,
                    'id': self._id})
        while True:
            message = self._receive()
            if message.get('method') == 'echo':
                self._send({'result': message['params'], 'error': None,
                            'id': message['id']})
            elif message.get('id') == self._id:
                break
        if message.get('error'):
            raise RuntimeError('OVSDB: %s' % message['error'])
        for result in message['result']:
            if result.get('error'):
                raise RuntimeError('OVSDB: %s' % result)
        return [r['rows'] for r in message['result']]

    def _send(self, message):
        self._sock.sendall(json.dumps(message).encode('utf-8'))

    def _receive(self):
        decoder = json.JSONDecoder()
        while True:
            self._buffer = self._buffer.lstrip()
            if self._buffer:
                try:
                    message, end = decoder.raw_decode(self._buffer)
                except ValueError:
                    pass
                else:
                    self._buffer = self._buffer[end:]
                    return message
            data = self._sock.recv(1 << 16)
            if not data:
                raise ConnectionError('OVSDB closed the connection')
            self._buffer += self._decoder.decode(data)


BRIDGE_COLUMNS = ['_uuid', 'name', 'ports', 'datapath_type', 'fail_mode',
                  'other_config', 'external_ids', 'protocols', 'controller',
                  'mirrors', 'stp_enable', 'mcast_snooping_enable',
                  'flood_vlans']
PORT_COLUMNS = ['_uuid', 'name', 'interfaces', 'tag', 'trunks', 'vlan_mode',
                'other_config', 'external_ids']
IFACE_COLUMNS = ['_uuid', 'name', 'type', 'options', 'external_ids',
                 'ofport', 'ifindex', 'mtu_request', 'error']
SYSCTLS = ('/proc/sys/net/ipv6/conf/all/disable_ipv6',
           '/proc/sys/net/ipv6/conf/default/disable_ipv6')


def _ovs_value(value, names=None):
    """An OVSDB JSON value as a comparable Python one; uuids as names."""
    if isinstance(value, list) and len(value) == 2:
        tag, body = value
        if tag == 'uuid':
            return (names or {}).get(body, body)
        if tag == 'set':
            return tuple(sorted((_ovs_value(v, names) for v in body),
                                key=repr))
        if tag == 'map':
            return tuple(sorted((_ovs_value(k), _ovs_value(v))
                                for k, v in body))
    return value


def default_route_device():
    """The device of the IPv4 default route, or None."""
    try:
        with open('/proc/net/route') as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == '00000000':
                    return fields[0]
    except OSError:
        pass
    return None


class Links:
    """Link dumps that decode only the links a payload could reach.

    The host is shared: hundreds of other tests' links may be there, and
    decoding each of them twice per payload would cost more than the
    payload. Each message's name, and the text after a ``vifagent:``
    marker, decide whether vifagent's own decoder looks at it.
    """

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                   socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self):
        self._sock.close()

    def dump(self, names=(), aliases=()):
        """Links named in ``names`` or marked with one of ``aliases``.

        A dump the kernel flags as interrupted (links came or went while
        it ran, as other tests' do) may miss a link: it is done again.
        """
        for _ in range(10):
            links, interrupted = self._dump(names, aliases)
            if not interrupted:
                break
        return links

    def _dump(self, names, aliases):
        self._seq += 1
        body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) +
                _ATTR.pack(8, _IFLA_EXT_MASK) +
                _U32.pack(_RTEXT_FILTER_SKIP_STATS))
        self._sock.send(_NLMSG.pack(16 + len(body), _RTM_GETLINK,
                                    _NLM_F_REQUEST | _NLM_F_DUMP,
                                    self._seq, 0) + body)
        links, interrupted = [], False
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, flags, seq, _ = _NLMSG.unpack_from(data,
                                                                 offset)
                if length < 16:
                    raise OSError('bad netlink message')
                end = offset + length
                if seq == self._seq:
                    interrupted |= bool(flags & _NLM_F_DUMP_INTR)
                    if kind == _NLMSG_DONE:
                        return links, interrupted
                    if kind == _NLMSG_ERROR:
                        code = -_S32.unpack_from(data, offset + 16)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        return links, interrupted
                    if kind == _RTM_NEWLINK and (
                            _name(data, offset, end) in names or
                            _marker(data, offset, end) in aliases):
                        links.append(rtnl.parse_link(data, offset, end))
                offset += (length + 3) & ~3


def _name(data, start, end):
    """IFLA_IFNAME of a link message (the kernel puts it first)."""
    offset = start + 32
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            break
        if kind & 0x3fff == _IFLA_IFNAME:
            return data[offset + 4:offset + length].split(
                b'\0', 1)[0].decode('utf-8', 'replace')
        offset += (length + 3) & ~3
    return None


def _marker(data, start, end):
    """The ``vifagent:...`` text in a message, or None (a cheap look)."""
    i = data.find(rtnl.ALIAS_PREFIX.encode(), start, end)
    if i < 0:
        return None
    j = data.find(b'\0', i, end)
    return data[i:j if j >= 0 else end].decode('utf-8', 'replace')


_NLMSG = struct.Struct('=IHHII')
_IFINFO = struct.Struct('=BxHiII')
_ATTR = struct.Struct('=HH')
_U32 = struct.Struct('=I')
_S32 = struct.Struct('=i')
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_NLM_F_REQUEST, _NLM_F_DUMP, _NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
_IFLA_IFNAME = 3
_IFLA_EXT_MASK = 29
_RTEXT_FILTER_SKIP_STATS = 1 << 3


def _device_name(text):
    """True when ``text`` could name a Linux network device."""
    return 0 < len(text.encode('utf-8')) <= 15 and '\x00' not in text


class HostView:
    """What a payload could reach, read the same way before and after.

    Keys are ``(kind, name)``: links by name (every name any string of
    the payload could give, raw or as ``(prefix + s)[:14]``, and every
    link marked ``vifagent:<s>``); OVS Port and Interface rows by those
    names, every row of the agent's bridge and every interface it owns;
    the agent's ports; lo, the default route device and the global IPv6
    switches. The resident ports' devices, and ``watch``, are always
    included.
    """

    def __init__(self, host, bridge, list_ports, residents, watch=(),
                 remote=None):
        self.host = host
        self.bridge = bridge
        self.list_ports = list_ports
        self.links = Links()
        self.ovsdb = Ovsdb(remote or cfg.CONF.ovs.ovsdb_connection)
        self.always = {'lo', 'eth0', 'br-int', 'ovs-system', 'ovs-netdev',
                       bridge}
        self.always.update(watch)
        route = default_route_device()
        if route:
            self.always.add(route)
        self.resident_names = set()
        self.resident_ids = set()
        self.set_residents(residents)

    def close(self):
        self.links.close()
        self.ovsdb.close()

    def set_residents(self, residents):
        self.resident_ids = {r.port_id for r in residents}
        self.resident_names = set()
        for r in residents:
            self.resident_names.update(binding_mod.device_names(
                r.port_id).all())

    def resident_key(self, key):
        """True for a key that belongs to a resident port."""
        return key[1] in self.resident_names or key[1] in self.resident_ids

    def candidates(self, strings):
        """(device names, link aliases) the strings could reach."""
        names = set(self.always) | self.resident_names
        aliases = {state.alias_for(i) for i in self.resident_ids}
        for s in strings:
            for v in {s, s.lower(), s.strip(), s.strip().lower()}:
                if _device_name(v):
                    names.add(v)
                for prefix in binding_mod.OWNED_PREFIXES:
                    names.add(binding_mod.device_name(prefix, v))
                if len(v) <= 255:
                    aliases.add(state.alias_for(v))
        return names, aliases

    def snapshot(self, strings=()):
        names, aliases = self.candidates(strings)
        view = {}
        for link in self.links.dump(names, aliases):
            view['link', link.name] = link
        for path in SYSCTLS:
            with open(path) as f:
                view['sysctl', path] = f.read().strip()
        view.update(self._ovs(sorted(n for n in names if _device_name(n))))
        for port in self.list_ports():
            view['agent-port', port['port_id']] = port
        return view

    def _ovs(self, names):
        owner = ['external_ids', 'includes',
                 ['map', [[state.OWNER_KEY, self.host]]]]
        queries = [('Bridge', [['name', '==', self.bridge]], BRIDGE_COLUMNS),
                   ('Interface', [owner], IFACE_COLUMNS)]
        for name in names:
            queries.append(('Interface', [['name', '==', name]],
                            IFACE_COLUMNS))
            queries.append(('Port', [['name', '==', name]], PORT_COLUMNS))
        rows = self.ovsdb.select(queries)
        bridges = rows[0]
        ifaces = {r['_uuid'][1]: r for r in rows[1]}
        ports = {}
        for (table, _, _), found in zip(queries[2:], rows[2:]):
            for r in found:
                (ifaces if table == 'Interface' else ports)[r['_uuid'][1]] = r
        # The bridge's ports and the ports of owned interfaces (named as
        # their interface), then the interfaces of all those ports.
        wanted = {u for b in bridges for u in _uuids(b['ports'])}
        more = [('Port', [['_uuid', '==', ['uuid', u]]], PORT_COLUMNS)
                for u in sorted(wanted - set(ports))]
        more += [('Port', [['name', '==', r['name']]], PORT_COLUMNS)
                 for r in ifaces.values()
                 if r['name'] not in {p['name'] for p in ports.values()}]
        if more:
            for found in self.ovsdb.select(more):
                for r in found:
                    ports[r['_uuid'][1]] = r
        wanted = {u for p in ports.values() for u in _uuids(p['interfaces'])}
        more = [('Interface', [['_uuid', '==', ['uuid', u]]], IFACE_COLUMNS)
                for u in sorted(wanted - set(ifaces))]
        if more:
            for found in self.ovsdb.select(more):
                for r in found:
                    ifaces[r['_uuid'][1]] = r
        uuid_names = {u: r['name'] for u, r in list(ifaces.items()) +
                      list(ports.items())}
        view = {}
        for kind, table in (('ovs-bridge', bridges),
                            ('ovs-port', ports.values()),
                            ('ovs-iface', ifaces.values())):
            for r in table:
                view[kind, r['name']] = tuple(
                    (k, r['_uuid'][1] if k == '_uuid' else
                     _ovs_value(v, uuid_names))
                    for k, v in sorted(r.items()))
        return view


def _uuids(value):
    if value[0] == 'uuid':
        return [value[1]]
    return [v[1] for v in value[1]]


def differences(before, after, ignore=None):
    """``{key: (before, after)}`` of what differs, minus ignored keys."""
    keys = set(before) | set(after)
    return {k: (before.get(k), after.get(k)) for k in sorted(keys, key=repr)
            if before.get(k) != after.get(k) and
            not (ignore and ignore(k))}


# -- the run -----------------------------------------------------------------

class Stats:
    """Counts of one run, and what went wrong, payload by payload."""

    def __init__(self, seed):
        self.seed = seed
        self.payloads = 0
        self.typed = collections.Counter()
        self.accepted = collections.Counter()
        self.refused_valid = collections.Counter()
        self.host_changes = []
        self.failures = []
        self.started = time.monotonic()
        self.elapsed = 0.0

    @property
    def typed_errors(self):
        return sum(self.typed.values())

    @property
    def accepted_count(self):
        return sum(self.accepted.values())

    def ok(self):
        return not self.host_changes and not self.failures

    def table(self):
        rate = self.payloads / self.elapsed if self.elapsed else 0.0
        rows = [
            ('payloads', str(self.payloads)),
            ('typed errors', '%d  (%s)' % (self.typed_errors,
                                           _counts(self.typed))),
            ('accepted', '%d  (%s)' % (self.accepted_count,
                                       _counts(self.accepted))),
            ('host changes', str(len(self.host_changes))),
            ('failures', str(len(self.failures))),
            ('payloads/s', '%.1f  (%.1f s, seed %d)' % (
                rate, self.elapsed, self.seed)),
        ]
        lines = ['%-14s %s' % row for row in rows]
        if self.refused_valid:
            lines.append('(valid by form, refused by the store or the '
                         'agent: %s)' % _counts(self.refused_valid))
        return '\n'.join(lines)

    def report(self, limit=20):
        """Every host change and failure, with its payload (abridged)."""
        lines = []
        for kind, records in (('HOST CHANGE', self.host_changes),
                              ('FAILURE', self.failures)):
            for number, what, payload, detail in records[:limit]:
                lines.append('%s #%d %s: %s\n  payload: %s\n  %s' % (
                    kind, number, what, payload.method,
                    payload.describe(), detail))
            if len(records) > limit:
                lines.append('... %d more' % (len(records) - limit))
        return '\n'.join(lines)


def _counts(counter):
    return ', '.join('%s %d' % kv for kv in sorted(counter.items())) or '-'


class Session:
    """One fuzz run against one running agent (an AgentFixture).

    ``start()`` binds the resident ports, ``run(count, seed)`` sends the
    payloads, ``finish()`` checks the agent's final state and unbinds the
    residents, ``remove_leftovers()`` (for cleanups, after the agent was
    stopped) deletes whatever a failed run left of this run's chains.
    """

    def __init__(self, agent, residents=2, call_timeout=CALL_TIMEOUT):
        self.agent = agent
        target = messaging.Target(topic=agent.topic,
                                  version=rpc.API_VERSION)
        client = messaging.get_rpc_client(
            agent.transport, target, version_cap=rpc.API_VERSION,
            timeout=call_timeout)
        self._call = client.prepare(server=agent.host)
        self._ping = client.prepare(server=agent.host, timeout=5)
        self.salt = uuid.uuid4().int
        self.residents = [self._new_resident() for _ in range(residents)]
        # A port id whose qbr and tap exist, unmarked: another's devices.
        self.decoy = str(uuid.uuid4())
        self.decoy_names = binding_mod.device_names(self.decoy)
        self.bound = {r.port_id for r in self.residents} | {self.decoy}
        self.resident_replies = {}
        self.view = HostView(agent.host, agent.bridge, self._list_ports,
                             self.residents, watch=self.decoy_names.all())
        self.decoy_links = None
        self.stats = None
        self.stopped = None
        self._progress = None

    def _new_resident(self):
        return Resident(str(uuid.uuid4()), 'fa:16:3e:%02x:%02x:%02x' % tuple(
            os.urandom(3)), str(uuid.uuid4()), str(uuid.uuid4()))

    def _list_ports(self):
        return self._call.call({}, 'list_ports')

    def close(self):
        self.view.close()

    # -- set-up and the end ----------------------------------------------
    def start(self):
        """Make the decoy devices, bind the residents, wait for rest."""
        self._make_decoy()
        for r in self.residents:
            self._bind_resident(r)
        self.settle()

    def _bind_resident(self, r):
        """Bind a resident port and wait until its chain is whole.

        A busy ovs-vswitchd may make the first attempt fail (ERROR); the
        agent retries, and the run goes on once the port is DOWN (no VM:
        libvirt is off) or ACTIVE.
        """
        reply = self._call.call({}, 'bind_port', binding=r.binding())
        deadline = time.monotonic() + RECOVER_TIMEOUT
        while reply['status'] not in (state.DOWN, state.ACTIVE):
            if time.monotonic() > deadline:
                raise AssertionError('resident port %s: %s' % (r.port_id,
                                                               reply))
            time.sleep(0.2)
            reply = self._call.call({}, 'get_port', port_id=r.port_id)
        self.resident_replies[r.port_id] = reply

    def settle(self, strings=(), timeout=5.0):
        """A snapshot once three in a row agree (the agent is at rest)."""
        deadline = time.monotonic() + timeout
        last, same = self.view.snapshot(strings), 0
        while True:
            time.sleep(0.05)
            now = self.view.snapshot(strings)
            same = same + 1 if now == last else 0
            if same == 2 or time.monotonic() > deadline:
                return now
            last = now

    def finish(self):
        """The agent alive and holding only the residents; then no port.

        Returns a list of problems (empty when all is well).
        """
        problems = []
        if self.agent.proc.poll() is not None:
            return ['the agent exited with %s' % self.agent.proc.returncode]
        listed = sorted(p['port_id'] for p in self._list_ports())
        if listed != sorted(self.resident_replies):
            problems.append('ports at the end: %s' % listed)
        state_ = self._call.call({}, 'get_agent_state')
        if state_.get('host') != self.agent.host:
            problems.append('get_agent_state: %s' % state_)
        for pid in listed:
            self._call.call({}, 'unbind_port', port_id=pid)
        if self._decoys() != self.decoy_links:
            problems.append('the decoy devices changed: %s -> %s' % (
                self.decoy_links, self._decoys()))
        left = self.leftovers()
        if left:
            problems.append('left behind after unbinding every port: %s' %
                            ', '.join(sorted(left)))
        return problems

    def _make_decoy(self):
        """(Re)make the decoy's qbr and tap, unmarked, as another's are."""
        for link in self._decoys():
            subprocess.run(['ip', 'link', 'del', 'dev', link.name],
                           capture_output=True)
        for command in (['link', 'add', self.decoy_names.qbr, 'type',
                         'bridge'],
                        ['tuntap', 'add', 'dev', self.decoy_names.tap,
                         'mode', 'tap']):
            subprocess.run(['ip'] + command, check=True, capture_output=True)
        self.decoy_links = self._decoys()

    def _decoys(self):
        return self.view.links.dump(set(self.decoy_names.all()))

    def leftovers(self):
        """Links marked for, and OVS interfaces owned for, this run's ids."""
        aliases = {state.alias_for(i) for i in self.bound}
        left = {'link %s' % link.name
                for link in self.view.links.dump(aliases=aliases)}
        owner = ['external_ids', 'includes',
                 ['map', [[state.OWNER_KEY, self.agent.host]]]]
        for r in self.view.ovsdb.select([('Interface', [owner],
                                          ['name'])])[0]:
            left.add('ovs %s' % r['name'])
        return left

    def remove_leftovers(self):
        """Cleanup: delete what is left of chains of this run's port ids.

        Only names derived from ids this run generated and the agent
        accepted, and the decoy's devices; run after the agent was
        stopped.
        """
        names = set()
        for pid in self.bound:
            names.update(binding_mod.device_names(pid).all())
        present = [link.name for link in self.view.links.dump(names)]
        for name in present:
            subprocess.run(['ovs-vsctl', '--if-exists', 'del-port', name],
                           capture_output=True)
            subprocess.run(['ip', 'link', 'del', 'dev', name],
                           capture_output=True)

    def remove_broker_objects(self):
        """Cleanup, once the agent stopped: its queues and exchanges.

        The broker is shared and keeps the agent's topic queues and the
        report exchange until they are deleted; its fanout queue is
        transient and expires by itself.
        """
        agent = self.agent
        url = urllib.parse.urlsplit(getattr(agent, 'transport_url', None) or
                                    agent_fixture.TRANSPORT_URL)
        url = urllib.parse.urlunsplit(url._replace(scheme='amqp'))
        names = (('queue', agent.topic),
                 ('queue', '%s.%s' % (agent.topic, agent.host)),
                 ('exchange', agent.topic + '_fanout'),
                 ('exchange', agent.report_topic + '_fanout'))
        with kombu.Connection(url, connect_timeout=5) as conn:
            for kind, name in names:
                try:
                    channel = conn.channel()
                    if kind == 'queue':
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                    channel.close()
                except Exception:
                    pass  # gone already

    # -- payloads ----------------------------------------------------------
    def strategies(self):
        return Strategies(self.agent.bridge, self.agent.host,
                          self.residents, self.salt, self.decoy)

    def run(self, count, seed, progress=None):
        """Send ``count`` payloads drawn with ``seed``; return the Stats.

        ``progress(stats)``, when given, is called every 1000 payloads.
        """
        self.stats = Stats(seed)
        self._progress = progress
        drive(self, count, seed)
        self.stats.elapsed = time.monotonic() - self.stats.started
        return self.stats

    def one(self, payload):
        """Send one payload, classify the reply, check the host."""
        if self.stopped:
            return
        self.stats.payloads += 1
        number = self.stats.payloads
        try:
            jsonutils.dumps(payload.kwargs)
        except Exception as e:
            self.stats.failures.append((number, 'unsendable payload',
                                        payload, repr(e)))
            return
        try:
            self._one(number, payload)
        except Exception as e:
            # A snapshot or an undo that failed: the agent may be gone.
            self.stats.failures.append((number, 'while checking: %s: %s' % (
                type(e).__name__, _first_line(e)), payload, ''))
            self._check_alive(number, payload)
        if self._progress and number % 1000 == 0:
            self.stats.elapsed = time.monotonic() - self.stats.started
            self._progress(self.stats)

    def _one(self, number, payload):
        stats = self.stats
        strings = payload.strings(MAX_STRINGS)
        before = self.view.snapshot(strings)
        outcome, detail, reply = self._send(payload)
        if outcome == 'failure':
            stats.failures.append((number, detail, payload, ''))
            self._check_alive(number, payload)
            if not self.stopped:
                self._compare(number, payload, before, strings,
                              'failed call')
            return
        if outcome == 'typed':
            stats.typed[detail] += 1
            if payload.valid():
                stats.refused_valid[detail] += 1
            self._compare(number, payload, before, strings, 'typed ' + detail)
            return
        problem = self._check_reply(payload, reply)
        if problem:
            stats.failures.append((number, problem, payload,
                                   _short(reply)[:1000]))
        stats.accepted[payload.method] += 1
        writes = payload.method in WRITES and not (
            payload.method == 'unbind_port' and isinstance(reply, dict) and
            reply.get('was_bound') is False)
        if not writes:
            self._compare(number, payload, before, strings,
                          'accepted read')
            return
        self._remember_bound(payload, reply)
        self.restore(payload)
        if self.touches_decoy(payload):
            self._make_decoy()
        ignore = self._undo_ignores(payload)
        # An unbind whose OVSDB transaction timed out is finished by the
        # agent's retries: what counts is the host once the agent is done.
        deadline = time.monotonic() + RECOVER_TIMEOUT
        while True:
            diff = differences(before, self.settle(strings), ignore)
            if not diff or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if diff:
            stats.failures.append((number, 'left behind after undoing an '
                                   'accepted payload', payload,
                                   _diff_text(diff)))

    def _send(self, payload):
        """('typed'|'accepted'|'failure', class or reason, reply)."""
        try:
            reply = self._call.call({}, payload.method, **payload.kwargs)
        except exception.VifAgentException as e:
            name = type(e).__name__
            if name.endswith('_Remote'):
                name = name[:-len('_Remote')]
            return 'typed', name, None
        except messaging.MessagingTimeout:
            return 'failure', 'no reply within %ds (MessagingTimeout)' % (
                CALL_TIMEOUT), None
        except TypeError as e:
            if payload.argument_error and _ARGUMENT_ERROR.search(str(e)):
                return 'typed', 'TypeError (arguments)', None
            return 'failure', 'untyped error: TypeError: %s' % (
                _first_line(e)), None
        except messaging.RemoteError as e:
            return 'failure', 'untyped error: RemoteError %s: %s' % (
                e.exc_type, _first_line(e.value or '')), None
        except Exception as e:
            return 'failure', 'untyped error: %s: %s' % (
                type(e).__name__, _first_line(e)), None
        return 'accepted', None, reply

    def _check_reply(self, payload, reply):
        """Why an accepted reply is wrong, or None."""
        if not payload.valid():
            return 'an invalid payload was accepted'
        method = payload.method
        kw = payload.kwargs
        if method == 'network_update':
            return None if reply is None else 'network_update returned a value'
        if method == 'list_ports':
            return None if isinstance(reply, list) else 'not a list'
        if not isinstance(reply, dict):
            return 'not a mapping'
        if method == 'get_agent_state':
            return None if reply.get('host') == self.agent.host else \
                'another host'
        if method == 'sync_ports':
            keys = {'added', 'updated', 'unchanged', 'removed', 'ports'}
            return None if keys <= set(reply) else 'missing keys'
        if method == 'bind_port':
            pid = kw['binding']['port_id'].lower()
            if reply.get('status') not in state.STATUSES:
                return 'no status'
        else:
            pid = kw['port_id'].lower()
        return None if reply.get('port_id') == pid else 'another port'

    def _compare(self, number, payload, before, strings, what):
        after = self.view.snapshot(strings)
        diff = differences(before, after)
        if diff:
            self.stats.host_changes.append((number, what, payload,
                                            _diff_text(diff)))

    def _check_alive(self, number, payload):
        if self.agent.proc.poll() is not None:
            self.stopped = 'the agent exited with %s' % (
                self.agent.proc.returncode)
            self.stats.failures.append((number, self.stopped, payload, ''))
            return
        try:
            self._ping.call({}, 'get_agent_state')
        except Exception as e:
            self.stopped = 'the agent stopped answering (%s)' % (
                type(e).__name__)
            self.stats.failures.append((number, self.stopped, payload, ''))

    def _remember_bound(self, payload, reply):
        """Ids the agent accepted, for the final check and the cleanup."""
        if payload.method == 'bind_port':
            self.bound.add(reply['port_id'])
        elif payload.method == 'sync_ports':
            self.bound.update(p['port_id'] for p in reply['ports'])

    def restore(self, payload):
        """Undo an accepted payload.

        Ports it added are unbound; a resident it removed or changed (as
        its reply shows) is bound again as it was.
        """
        listed = {p['port_id']: p for p in self._list_ports()}
        for pid in listed:
            if pid not in self.resident_replies:
                self._call.call({}, 'unbind_port', port_id=pid)
        for r in self.residents:
            port = listed.get(r.port_id)
            if port is not None and _binding_view(port) == _binding_view(
                    self.resident_replies[r.port_id]):
                continue
            if port is not None:
                self._call.call({}, 'unbind_port', port_id=r.port_id)
            self._bind_resident(r)

    def _undo_ignores(self, payload):
        """What an undone payload may have changed for good, as a filter.

        A resident it touched was bound afresh (new devices), and so was
        the decoy (made again).
        """
        ignored = []
        if self.touches_residents(payload):
            ignored.append(self.view.resident_key)
        if self.touches_decoy(payload):
            names = set(self.decoy_names.all())
            ignored.append(lambda k: k[1] in names)
        if not ignored:
            return None
        return lambda k: any(f(k) for f in ignored)

    def touches_decoy(self, payload):
        """True when an accepted payload may have adopted the decoy.

        The decoy's devices carry the names of every port id starting
        with its name key: binding such a port adopts them, as nova's
        own chains are adopted, and unbinding it removes them.
        """
        key = binding_mod.name_key(self.decoy)
        return any(s.lower().startswith(key)
                   for s in payload.strings(MAX_STRINGS))

    def touches_residents(self, payload):
        """True when an accepted payload may have changed a resident.

        A sync names the complete set; otherwise a resident is touched
        through its port id or its network (an update with the same
        revision may change what a reply does not show, such as the VM).
        """
        if payload.method == 'sync_ports':
            return True
        mentioned = {s.lower() for s in payload.strings(MAX_STRINGS)}
        return any(r.port_id in mentioned or r.network_id in mentioned
                   for r in self.residents)


def _binding_view(port):
    return {k: port.get(k) for k in ('revision', 'network_id', 'mac_address',
                                     'mtu', 'admin_state_up', 'devices')}


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ''


def _fields(value):
    """A snapshot value as a mapping of its fields, for a short diff."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple) and all(
            isinstance(v, tuple) and len(v) == 2 for v in value):
        return dict(value)
    if isinstance(value, dict):
        return value
    return None


def _diff_text(diff, limit=6):
    """What changed, key by key; of a record only the fields that did."""
    lines = []
    for key, (old, new) in list(diff.items())[:limit]:
        a, b = _fields(old), _fields(new)
        if a is not None and b is not None:
            change = ', '.join('%s %s -> %s' % (f, _short(a.get(f)),
                                                _short(b.get(f)))
                               for f in sorted(set(a) | set(b))
                               if a.get(f) != b.get(f))
        elif old is None or new is None:
            change = '%s -> %s' % ('absent' if old is None else
                                   _short(old)[:300],
                                   'absent' if new is None else
                                   _short(new)[:300])
        else:
            change = '%s -> %s' % (_short(old)[:300], _short(new)[:300])
        lines.append('%s %s: %s' % (key[0], _short(key[1]), change[:600]))
    if len(diff) > limit:
        lines.append('... %d more' % (len(diff) - limit))
    return '\n  '.join(lines)


def drive(session, count, seed):
    """Run ``count`` payloads of ``session`` under hypothesis, seeded.

    Generation only: nothing fails inside, so there is no shrinking; the
    session records every result and the caller judges them.
    """
    strategy = session.strategies().payloads

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=count, deadline=None, database=None,
                         phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck),
                         report_multiple_bugs=False)
    @hypothesis.given(st.data())
    def run_one(data):
        session.one(data.draw(strategy, label='payload'))

    run_one()
