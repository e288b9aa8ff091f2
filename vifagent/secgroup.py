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

"""The security-group model (API 1.1), validated in one place.

Every entry point (RPC, store load) builds groups through
:meth:`SecurityGroup.from_dict`; it raises InvalidSecurityGroup naming
the first bad field, so an untrusted group never reaches the firewall.
Field names and meanings are neutron's.
"""

import dataclasses

from vifagent import binding as binding_mod
from vifagent import exception

__all__ = [
    'MAX_MEMBERS',
    'MAX_RULES',
    'Rule',
    'SecurityGroup',
    'parse_many',
]

MAX_RULES = 1000
MAX_MEMBERS = 10000
#: Most groups one sync_security_groups call may carry.
MAX_GROUPS = 10000

INGRESS = 'ingress'
EGRESS = 'egress'
IPV4 = 'IPv4'
IPV6 = 'IPv6'
PROTOCOLS = ('tcp', 'udp', 'icmp', 'icmpv6')
_PORT_PROTOCOLS = PROTOCOLS
_RULE_FIELDS = ('direction', 'ethertype', 'protocol', 'port_range_min',
                'port_range_max', 'remote_ip_prefix', 'remote_group_id')
_GROUP_FIELDS = ('id', 'revision', 'stateful', 'rules', 'members')


def _invalid(field, reason):
    return exception.InvalidSecurityGroup(field=field, reason=reason)


def _int(value, field, minimum, maximum):
    try:
        return binding_mod.validate_int(value, field, minimum, maximum)
    except exception.InvalidBinding as e:
        raise _invalid(field, e.reason)


def _uuid(value, field):
    try:
        return binding_mod.validate_uuid(value, field)
    except exception.InvalidBinding as e:
        raise _invalid(field, e.reason)


def _unknown(data, allowed, prefix=''):
    unknown = sorted(str(k)[:64] for k in data if k not in allowed)
    if unknown:
        raise _invalid(prefix + unknown[0], 'unknown field')


def _family(ethertype):
    return 4 if ethertype == IPV4 else 6


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule: traffic it allows in its direction (neutron's fields)."""

    direction: str
    ethertype: str
    protocol: object = None
    port_range_min: int = None
    port_range_max: int = None
    remote_ip_prefix: str = None
    remote_group_id: str = None

    @classmethod
    def from_dict(cls, data):
        """Validate one untrusted rule; raise InvalidSecurityGroup."""
        if not isinstance(data, dict):
            raise _invalid('rules', 'each rule must be a mapping')
        _unknown(data, _RULE_FIELDS, 'rules.')
        for field in ('direction', 'ethertype'):
            if field not in data:
                raise _invalid('rules.' + field, 'required field missing')
        direction = data['direction']
        if direction not in (INGRESS, EGRESS):
            raise _invalid('rules.direction', 'must be ingress or egress')
        ethertype = data['ethertype']
        if ethertype not in (IPV4, IPV6):
            raise _invalid('rules.ethertype', 'must be IPv4 or IPv6')
        protocol = data.get('protocol')
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise _invalid('rules.protocol', 'must be null, one of %s '
                               'or an integer 0..255' % ', '.join(PROTOCOLS))
        elif protocol is not None:
            protocol = _int(protocol, 'rules.protocol', 0, 255)
        if protocol == 'icmp' and ethertype == IPV6:
            raise _invalid('rules.protocol', 'icmp with IPv6: use icmpv6')
        if protocol == 'icmpv6' and ethertype == IPV4:
            raise _invalid('rules.protocol', 'icmpv6 with IPv4: use icmp')
        low, high = _ports(protocol, data.get('port_range_min'),
                           data.get('port_range_max'))
        prefix = data.get('remote_ip_prefix')
        group = data.get('remote_group_id')
        if prefix is not None and group is not None:
            raise _invalid('rules.remote_ip_prefix', 'remote_ip_prefix and '
                           'remote_group_id are mutually exclusive')
        if prefix is not None:
            prefix = binding_mod.validate_cidr(
                prefix, 'rules.remote_ip_prefix', _invalid)
            if '/' not in prefix:
                prefix += '/32' if ':' not in prefix else '/128'
            if binding_mod.ip_version(prefix) != _family(ethertype):
                raise _invalid('rules.remote_ip_prefix', '%s is not an %s '
                               'prefix' % (prefix, ethertype))
        if group is not None:
            group = _uuid(group, 'rules.remote_group_id')
        return cls(direction, ethertype, protocol, low, high, prefix, group)

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def family(self):
        return _family(self.ethertype)


def _ports(protocol, low, high):
    """Validate the port (or ICMP type and code) fields of one rule."""
    if low is None and high is None:
        return None, None
    if protocol not in _PORT_PROTOCOLS:
        field = 'rules.port_range_min' if low is not None else \
            'rules.port_range_max'
        raise _invalid(field, 'only allowed with protocol tcp, udp, icmp '
                       'or icmpv6')
    if protocol in ('icmp', 'icmpv6'):
        # neutron's reading: min is the ICMP type, max the code.
        if low is None:
            raise _invalid('rules.port_range_max', 'an ICMP code needs an '
                           'ICMP type (port_range_min)')
        low = _int(low, 'rules.port_range_min', 0, 255)
        if high is not None:
            high = _int(high, 'rules.port_range_max', 0, 255)
        return low, high
    if low is None:
        raise _invalid('rules.port_range_min', 'required with '
                       'port_range_max')
    low = _int(low, 'rules.port_range_min', 1, 65535)
    high = low if high is None else _int(high, 'rules.port_range_max', 1,
                                         65535)
    if low > high:
        raise _invalid('rules.port_range_min', 'greater than '
                       'port_range_max')
    return low, high


def _members(data):
    if data is None:
        return (), ()
    if not isinstance(data, dict):
        raise _invalid('members', 'must be a mapping of IPv4 and IPv6 '
                       'address lists')
    _unknown(data, (IPV4, IPV6), 'members.')
    result = []
    total = 0
    for ethertype in (IPV4, IPV6):
        field = 'members.' + ethertype
        items = data.get(ethertype, [])
        if not isinstance(items, list):
            raise _invalid(field, 'must be a list')
        total += len(items)
        if total > MAX_MEMBERS:
            raise _invalid('members', 'more than %d members' % MAX_MEMBERS)
        addresses = set()
        for item in items:
            ip = binding_mod.validate_ip(item, field, _invalid)
            if binding_mod.ip_version(ip) != _family(ethertype):
                raise _invalid(field, '%s is not an %s address' %
                               (ip, ethertype))
            addresses.add(ip)
        result.append(tuple(sorted(addresses)))
    return tuple(result)


@dataclasses.dataclass(frozen=True)
class SecurityGroup:
    """A group: its rules, and the addresses of its members anywhere."""

    id: str
    revision: int = 0
    stateful: bool = True
    rules: tuple = ()
    #: (IPv4 addresses, IPv6 addresses), sorted
    members: tuple = ((), ())

    @classmethod
    def from_dict(cls, data):
        """Validate an untrusted group; raise InvalidSecurityGroup."""
        if not isinstance(data, dict):
            raise _invalid('security_group', 'must be a mapping, not %s' %
                           type(data).__name__)
        _unknown(data, _GROUP_FIELDS)
        if 'id' not in data:
            raise _invalid('id', 'required field missing')
        group_id = _uuid(data['id'], 'id')
        revision = _int(data.get('revision', 0), 'revision', 0,
                        binding_mod.MAX_REVISION)
        stateful = data.get('stateful', True)
        if not isinstance(stateful, bool):
            raise _invalid('stateful', 'must be a boolean')
        rules = data.get('rules', [])
        if not isinstance(rules, list):
            raise _invalid('rules', 'must be a list')
        if len(rules) > MAX_RULES:
            raise _invalid('rules', 'more than %d rules' % MAX_RULES)
        parsed = []
        for rule in map(Rule.from_dict, rules):
            if rule not in parsed:
                parsed.append(rule)
        return cls(group_id, revision, stateful, tuple(parsed),
                   _members(data.get('members')))

    def to_dict(self):
        """The group as JSON primitives (the wire and store form)."""
        return {'id': self.id, 'revision': self.revision,
                'stateful': self.stateful,
                'rules': [r.to_dict() for r in self.rules],
                'members': {IPV4: list(self.members[0]),
                            IPV6: list(self.members[1])}}

    def same_content(self, other):
        return (dataclasses.replace(self, revision=0) ==
                dataclasses.replace(other, revision=0))

    def remote_groups(self):
        """Ids of the groups this group's rules match members of."""
        return {r.remote_group_id for r in self.rules
                if r.remote_group_id is not None}


def parse_many(items):
    """Validate a list of untrusted groups: all of them, or raise."""
    if not isinstance(items, list):
        raise _invalid('groups', 'must be a list, not %s' %
                       type(items).__name__)
    if len(items) > MAX_GROUPS:
        raise _invalid('groups', 'more than %d groups' % MAX_GROUPS)
    parsed = [SecurityGroup.from_dict(g) for g in items]
    seen = set()
    for g in parsed:
        if g.id in seen:
            raise _invalid('id', '%s appears twice' % g.id)
        seen.add(g.id)
    return parsed


# -- firewall object names (what the agent owns in the firewall) ----------
#: Every chain and set of ours starts with one of these.
FIREWALL_PREFIXES = ('vifagent', 'vfa-')
#: Hook chains, jumped to from the built-in chain they are named after.
HOOK_CHAINS = {'filter': ('FORWARD', 'vifagent-FORWARD'),
               'raw': ('PREROUTING', 'vifagent-PREROUTING')}
#: Per-port chains: to the VM, from the VM, source check, conntrack zone,
#: and ARP check (in the nftables ``bridge`` table).
CHAIN_KINDS = ('i', 'o', 's', 'z', 'a')
#: Port-independent chains of each IP family's filter table, written once
#: and jumped to by every filtered port: what always passes to the VM,
#: and what passes or is dropped from it before and after its source
#: check. They stay once made, as the hook chains do.
COMMON_CHAINS = ('vifagent-TO-VM', 'vifagent-FROM-VM-PRE',
                 'vifagent-FROM-VM')
#: Per-group chains: a group's rules of one direction (``i`` to the VM,
#: ``o`` from it), once per host for every port in the group.
GROUP_KINDS = ('i', 'o')
_GROUP_PREFIX = 'vfa-g%s-'
#: iptables chain names are at most 28 characters.
_GROUP_ID_LEN = 21
_GROUP_ID_CHARS = frozenset('0123456789abcdef-')
#: The nftables bridge-family table holding the ARP checks, its base
#: chain and the map from a port's qvb to its ARP chain.
ARP_TABLE = 'vifagent'
ARP_BASE = 'vifagent-FORWARD'
ARP_MAP = 'vfa-arp'
_SET_PREFIX = 'vfa-v%d-'
#: ipset names are at most 31 characters.
_SET_ID_LEN = 23


def ours(name):
    """True when a chain or set name is one the agent may own."""
    return isinstance(name, str) and name.startswith(FIREWALL_PREFIXES)


def chain_name(kind, port_id):
    """``vfa-<kind><11-character port id>``, like the device names."""
    return 'vfa-%s%s' % (kind, binding_mod.name_key(port_id))


def chain_key(name):
    """The port name key of a per-port chain, else None."""
    if (isinstance(name, str) and len(name) == 16 and
            name.startswith('vfa-') and name[4] in CHAIN_KINDS):
        return name[5:]
    return None


def group_chain_name(kind, group_id):
    """``vfa-g<kind>-<first 21 characters of the group id>``."""
    return (_GROUP_PREFIX % kind) + group_id[:_GROUP_ID_LEN]


def group_chain_id(name):
    """The group id prefix a per-group chain is named after, else None."""
    if (isinstance(name, str) and
            len(name) == len(_GROUP_PREFIX % 'i') + _GROUP_ID_LEN and
            name.startswith('vfa-g') and name[5] in GROUP_KINDS and
            name[6] == '-' and set(name[7:]) <= _GROUP_ID_CHARS):
        return name[7:]
    return None


def name_clashes(group_ids):
    """``{id: other ids}`` of groups whose chains or sets would share a name.

    Names carry a prefix of the group id (21 characters for chains, 23
    for sets): two ids sharing it must not be used, or one group's rules
    would filter the other's ports.
    """
    by_prefix = {}
    for gid in group_ids:
        by_prefix.setdefault(gid[:_GROUP_ID_LEN], set()).add(gid)
    return {gid: sorted(same - {gid}) for same in by_prefix.values()
            if len(same) > 1 for gid in same}


def chain_kind(name):
    """'hook', 'common', 'port' or 'group' for the chains of ours, else None.

    Only these forms are ever written (and the privileged daemon accepts
    no other): a chain with our prefix in any other form is not ours.
    """
    if not isinstance(name, str):
        return None
    if name in COMMON_CHAINS:
        return 'common'
    if any(name == hook for _, hook in HOOK_CHAINS.values()):
        return 'hook'
    if chain_key(name) is not None and name[4] != 'a' and \
            set(name[5:]) <= _GROUP_ID_CHARS:
        return 'port'
    if group_chain_id(name) is not None:
        return 'group'
    return None


def set_name(group_id, family):
    """The ipset of a remote group's members of one IP family."""
    return (_SET_PREFIX % family) + group_id[:_SET_ID_LEN]
