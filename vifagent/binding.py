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

"""The binding model: one port's desired state, validated in one place.

Every entry point (RPC, CLI, store load) builds bindings through
:meth:`Binding.from_dict` and port ids through :func:`validate_uuid`, so
there is exactly one definition of what a valid binding is.
"""

import dataclasses
import fnmatch
import ipaddress
import re

from vifagent import exception

__all__ = [
    'Binding',
    'DeviceNames',
    'AddressPair',
    'check_netns',
    'DEAD_VLAN',
    'MAX_BINDINGS',
    'OWNED_PREFIXES',
    'device_key',
    'device_name',
    'device_names',
    'name_key',
    'parse_many',
    'validate_int',
    'validate_ip',
    'validate_mac',
    'validate_netns',
    'validate_mtu',
    'validate_uuid',
]

#: IFNAMSIZ is 16 with the NUL; nova/os-vif keep names to 14 characters.
NIC_NAME_LEN = 14
TAP_PREFIX = 'tap'
BRIDGE_PREFIX = 'qbr'
BRIDGE_VETH_PREFIX = 'qvb'
OVS_VETH_PREFIX = 'qvo'
#: Prefixes of devices the agent creates and may garbage-collect.
OWNED_PREFIXES = (TAP_PREFIX, BRIDGE_PREFIX, BRIDGE_VETH_PREFIX,
                  OVS_VETH_PREFIX)

VIF_TYPE_OVS_HYBRID = 'ovs_hybrid'
VIF_TYPE_NETNS = 'netns'
VIF_TYPES = (VIF_TYPE_OVS_HYBRID, VIF_TYPE_NETNS)

MIN_MTU = 68
MAX_MTU = 65535
MAX_REVISION = 2 ** 63 - 1
#: OVS's "dead" VLAN: a port tagged with it forwards nothing.
DEAD_VLAN = 4095
#: Most bindings one sync_ports call may carry.
MAX_BINDINGS = 10000

# Always used with fullmatch(): with match() and '$', a final newline
# would pass.
_UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                      r'[0-9a-f]{12}')
_MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
# A network namespace is a file name under /var/run/netns: no slash, no
# leading dot, bounded length.
_NETNS_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}')
_MAX_STRING = 64
#: Limits of the port-security fields (API 1.1).
MAX_FIXED_IPS = 32
MAX_ADDRESS_PAIRS = 32
MAX_SECURITY_GROUPS = 16


@dataclasses.dataclass(frozen=True)
class DeviceNames:
    """The host device names of one port's chain."""

    tap: str
    qbr: str
    qvb: str
    qvo: str

    def all(self):
        """Every name of the chain: qbr, qvb, qvo, tap."""
        return (self.qbr, self.qvb, self.qvo, self.tap)


def device_name(prefix, port_id):
    """Return ``(prefix + port_id)[:14]``, the nova/os-vif naming rule."""
    return (prefix + port_id)[:NIC_NAME_LEN]


def name_key(port_id):
    """The first eleven characters of a port id: what its names carry."""
    return port_id[:NIC_NAME_LEN - 3]


def device_key(name):
    """The name key of a device named like ours, else None."""
    if name and name.startswith(OWNED_PREFIXES):
        return name[3:]
    return None


def device_names(port_id):
    """Return the chain's device names for a (validated) port id."""
    return DeviceNames(tap=device_name(TAP_PREFIX, port_id),
                       qbr=device_name(BRIDGE_PREFIX, port_id),
                       qvb=device_name(BRIDGE_VETH_PREFIX, port_id),
                       qvo=device_name(OVS_VETH_PREFIX, port_id))


def _invalid(field, reason):
    return exception.InvalidBinding(field=field, reason=reason)


def _require_str(value, field):
    if not isinstance(value, str):
        raise _invalid(field, 'must be a string, not %s' %
                       type(value).__name__)
    if len(value) > _MAX_STRING:
        raise _invalid(field, 'longer than %d characters' % _MAX_STRING)
    # Identifiers are ASCII: case folding of other alphabets could turn a
    # near miss into a canonical string.
    if not value.isascii():
        raise _invalid(field, 'must be ASCII')
    return value


def validate_uuid(value, field='port_id'):
    """Return the lower-case dashed form of a UUID string or raise.

    Only the 36-character dashed form is accepted (any letter case): device
    names are derived from it, so two spellings must never name two chains.
    """
    value = _require_str(value, field).lower()
    if not _UUID_RE.fullmatch(value):
        raise _invalid(field, 'not a UUID in the 8-4-4-4-12 form')
    return value


def validate_mac(value, field='mac_address'):
    """Return a unicast MAC in lower-case colon form or raise.

    libvirt refuses guest MACs whose first octet is 0xFE (it uses that
    octet for the host-side tap), so those are refused here too.
    """
    value = _require_str(value, field).lower()
    if not _MAC_RE.fullmatch(value):
        raise _invalid(field, 'not a MAC address of the form '
                       'xx:xx:xx:xx:xx:xx')
    first = int(value[:2], 16)
    if first & 0x01:
        raise _invalid(field, 'a multicast or broadcast address')
    if first == 0xfe:
        raise _invalid(field, 'first octet 0xfe is reserved for the '
                       'host side of a libvirt tap')
    if value == '00:00:00:00:00:00':
        raise _invalid(field, 'the all-zero address')
    return value


def validate_int(value, field, minimum, maximum):
    """An integer (never a bool) in [minimum, maximum]; InvalidBinding."""
    # bool is an int subclass; True must not pass as MTU 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, 'must be an integer, not %s' %
                       type(value).__name__)
    if not minimum <= value <= maximum:
        raise _invalid(field, 'must be between %d and %d' %
                       (minimum, maximum))
    return value


def validate_mtu(value, field='mtu'):
    return validate_int(value, field, MIN_MTU, MAX_MTU)


def _validate_bool(value, field):
    if not isinstance(value, bool):
        raise _invalid(field, 'must be a boolean, not %s' %
                       type(value).__name__)
    return value


def validate_netns(value, field='netns'):
    value = _require_str(value, field)
    if not _NETNS_RE.fullmatch(value):
        raise _invalid(field, 'not a network namespace name')
    return value


def validate_ip(value, field='fixed_ips', error=None):
    """Return an IPv4 or IPv6 address (no prefix) in canonical form."""
    error = error or _invalid
    if not isinstance(value, str) or len(value) > _MAX_STRING or \
            not value.isascii():
        raise error(field, 'not an IP address: %r' % (value,))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise error(field, 'not an IP address: %r' % (value,))


def validate_cidr(value, field, error=None):
    """Return an address or CIDR in canonical form (host bits cleared).

    A plain address stays a plain address; a prefix is kept as written,
    so ``10.0.0.0/24`` and ``10.0.0.5`` keep their meaning.
    """
    error = error or _invalid
    if not isinstance(value, str) or len(value) > _MAX_STRING or \
            not value.isascii():
        raise error(field, 'not an IP address or CIDR: %r' % (value,))
    try:
        if '/' not in value:
            return str(ipaddress.ip_address(value))
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise error(field, 'not an IP address or CIDR: %r' % (value,))


def ip_version(value):
    """4 or 6 for a canonical address or CIDR string."""
    return 6 if ':' in value else 4


@dataclasses.dataclass(frozen=True)
class AddressPair:
    """An allowed address pair: traffic from this IP (or CIDR) and MAC."""

    ip_address: str
    mac_address: str

    def to_dict(self):
        return {'ip_address': self.ip_address,
                'mac_address': self.mac_address}


def _validate_list(value, field, limit):
    if not isinstance(value, list):
        raise _invalid(field, 'must be a list, not %s' %
                       type(value).__name__)
    if len(value) > limit:
        raise _invalid(field, 'more than %d items' % limit)
    return value


def _unique(values, field):
    seen = set()
    for value in values:
        if value in seen:
            raise _invalid(field, '%s appears twice' % (value,))
        seen.add(value)
    return tuple(values)


def _validate_fixed_ips(value):
    return _unique([validate_ip(ip, 'fixed_ips') for ip in
                    _validate_list(value, 'fixed_ips', MAX_FIXED_IPS)],
                   'fixed_ips')


def _validate_pairs(value, port_mac):
    pairs = []
    for item in _validate_list(value, 'allowed_address_pairs',
                               MAX_ADDRESS_PAIRS):
        if not isinstance(item, dict):
            raise _invalid('allowed_address_pairs',
                           'each pair must be a mapping')
        unknown = sorted(str(k)[:_MAX_STRING] for k in item
                         if k not in ('ip_address', 'mac_address'))
        if unknown:
            raise _invalid('allowed_address_pairs.%s' % unknown[0],
                           'unknown field')
        if 'ip_address' not in item:
            raise _invalid('allowed_address_pairs.ip_address',
                           'required field missing')
        mac = item.get('mac_address')
        pairs.append(AddressPair(
            validate_cidr(item['ip_address'],
                          'allowed_address_pairs.ip_address'),
            port_mac if mac is None else
            validate_mac(mac, 'allowed_address_pairs.mac_address')))
    return _unique(pairs, 'allowed_address_pairs')


def _validate_groups(value):
    return _unique([validate_uuid(g, 'security_groups') for g in
                    _validate_list(value, 'security_groups',
                                   MAX_SECURITY_GROUPS)],
                   'security_groups')


@dataclasses.dataclass(frozen=True)
class Binding:
    """The desired state of one port; build it with :meth:`from_dict`."""

    port_id: str
    mac_address: str
    instance_uuid: str
    network_id: str
    mtu: int
    admin_state_up: bool = True
    revision: int = 0
    vif_type: str = VIF_TYPE_OVS_HYBRID
    netns: str = None
    # API 1.1: port security. The defaults are the 1.0 behaviour.
    port_security_enabled: bool = False
    fixed_ips: tuple = ()
    allowed_address_pairs: tuple = ()
    security_groups: tuple = ()

    @property
    def devices(self):
        return device_names(self.port_id)

    @property
    def owns_tap(self):
        """True when the agent makes the tap itself (netns ports)."""
        return self.vif_type == VIF_TYPE_NETNS

    @classmethod
    def from_dict(cls, data, default_mtu=1500):
        """Validate an untrusted mapping and return a Binding.

        Raises InvalidBinding naming the first bad field; unknown fields
        are an error so that a typo never silently drops a setting.
        """
        if not isinstance(data, dict):
            raise _invalid('binding', 'must be a mapping, not %s' %
                           type(data).__name__)
        unknown = sorted(str(k)[:_MAX_STRING] for k in data
                         if k not in _FIELDS)
        if unknown:
            raise _invalid(unknown[0], 'unknown field')
        for field in _REQUIRED:
            if field not in data:
                raise _invalid(field, 'required field missing')
        vif_type = data.get('vif_type', VIF_TYPE_OVS_HYBRID)
        if vif_type not in VIF_TYPES:
            raise _invalid('vif_type', 'must be one of %s' %
                           ', '.join(VIF_TYPES))
        netns = data.get('netns')
        if vif_type == VIF_TYPE_NETNS:
            if netns is None:
                raise _invalid('netns', 'required for vif_type netns')
            netns = validate_netns(netns)
        elif netns is not None:
            raise _invalid('netns', 'only allowed with vif_type netns')
        mtu = data.get('mtu')
        mac = validate_mac(data['mac_address'])
        port_security = _validate_bool(
            data.get('port_security_enabled', False),
            'port_security_enabled')
        groups = _validate_groups(data.get('security_groups', []))
        if groups and not port_security:
            raise _invalid('security_groups', 'not allowed with '
                           'port_security_enabled false')
        return cls(
            port_id=validate_uuid(data['port_id'], 'port_id'),
            mac_address=mac,
            instance_uuid=validate_uuid(data['instance_uuid'],
                                        'instance_uuid'),
            network_id=validate_uuid(data['network_id'], 'network_id'),
            mtu=validate_mtu(default_mtu if mtu is None else mtu),
            admin_state_up=_validate_bool(data.get('admin_state_up', True),
                                          'admin_state_up'),
            revision=validate_int(data.get('revision', 0), 'revision', 0,
                                  MAX_REVISION),
            vif_type=vif_type,
            netns=netns,
            port_security_enabled=port_security,
            fixed_ips=_validate_fixed_ips(data.get('fixed_ips', [])),
            allowed_address_pairs=_validate_pairs(
                data.get('allowed_address_pairs', []), mac),
            security_groups=groups)

    def to_dict(self):
        """Return the binding as JSON primitives (the wire and store form).

        Port-security fields at their defaults are left out, so a 1.0
        binding keeps exactly its 1.0 form.
        """
        data = dataclasses.asdict(self)
        if data['netns'] is None:
            del data['netns']
        for field in _SECURITY_FIELDS:
            if not data[field]:
                del data[field]
        if 'fixed_ips' in data:
            data['fixed_ips'] = list(self.fixed_ips)
        if 'security_groups' in data:
            data['security_groups'] = list(self.security_groups)
        if 'allowed_address_pairs' in data:
            data['allowed_address_pairs'] = [
                p.to_dict() for p in self.allowed_address_pairs]
        return data

    def same_content(self, other):
        """True when everything but the revision is equal."""
        return (dataclasses.replace(self, revision=0) ==
                dataclasses.replace(other, revision=0))


def check_netns(binding, allowed):
    """Refuse a netns binding unless ``allowed`` patterns admit it.

    ``allowed`` is None when netns ports are off, else a list of shell
    patterns one of which the namespace name must match.
    """
    if not binding.owns_tap:
        return binding
    if allowed is None:
        raise _invalid('vif_type', 'netns ports are disabled on this host')
    if not any(fnmatch.fnmatchcase(binding.netns, p) for p in allowed):
        raise _invalid('netns', 'namespace %s is not one this agent may '
                       'use' % binding.netns)
    return binding


def parse_many(items, default_mtu=1500):
    """Validate a list of untrusted bindings: all of them, or raise.

    One bad binding, a repeated port id, or more than MAX_BINDINGS
    rejects the whole list, so a caller changes nothing on a bad request.
    """
    if not isinstance(items, list):
        raise _invalid('bindings', 'must be a list, not %s' %
                       type(items).__name__)
    if len(items) > MAX_BINDINGS:
        raise _invalid('bindings', 'more than %d bindings' % MAX_BINDINGS)
    parsed = [Binding.from_dict(data, default_mtu) for data in items]
    seen = set()
    for b in parsed:
        if b.port_id in seen:
            raise _invalid('port_id', '%s appears twice' % b.port_id)
        seen.add(b.port_id)
    return parsed


_FIELDS = frozenset(f.name for f in dataclasses.fields(Binding))
_SECURITY_FIELDS = ('port_security_enabled', 'fixed_ips',
                    'allowed_address_pairs', 'security_groups')
_REQUIRED = ('port_id', 'mac_address', 'instance_uuid', 'network_id')
