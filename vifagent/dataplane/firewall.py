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

"""Port security: iptables (nft backend) rules and ipsets on qbr bridges.

Three pure steps and a thin shell around privsep:

* :func:`render` turns ports with port security into the chains and sets
  they need (neutron's iptables_hybrid semantics, our own names);
* :func:`parse` reads ``iptables-save``/``ip6tables-save``/``ipset save``
  output back into the same shape, keeping only what carries our prefix;
* :func:`plan` compares the two and returns the smallest :class:`Batch`
  (rewrite a chain that differs, add or delete single dispatch rules,
  add or remove set members);
* :class:`Firewall` dumps the host's firewall in one privileged call and
  applies a batch in one more (``iptables-restore --noflush`` per family,
  ``ipset restore`` for sets).

Layout: what is the same for every port is written once per host. Each
security group has one chain per IP family and direction holding its
rules (``vfa-gi-<group id>``, ``vfa-go-...``); the port-independent
rules (DHCP, neighbour discovery, no router advertisements) are in three
common chains. A port's own chains hold only what is its own (the source
check, the conntrack state rules) and jump to the common chains and to
its groups' chains, then drop: an ACCEPT in a group chain ends the
packet, falling off its end returns to the port's chain for the next
group. A port in two groups costs 38 rules whatever the groups hold
(neutron's iptables_hybrid layout repeats every group rule in every
port's chain), and a group rule change rewrites the group's chain, no
port's.

Traffic of a port is recognised by its qvb (``--physdev-out qvb``: from
the VM, ``--physdev-in qvb``: to the VM), whose name derives from the port
id, so the filter is in place before the VM has a tap and whatever libvirt
names it.
"""

import dataclasses
import ipaddress
import re

from oslo_log import log as logging

from vifagent import binding as binding_mod
from vifagent import secgroup as sg

LOG = logging.getLogger(__name__)

__all__ = [
    'Batch',
    'Firewall',
    'PortFilter',
    'Ruleset',
    'parse',
    'plan',
    'render',
]

FAMILIES = (4, 6)
TABLES = ('filter', 'raw')
SYSCTLS = ('net.bridge.bridge-nf-call-iptables',
           'net.bridge.bridge-nf-call-ip6tables')

_CORE_PROTOCOLS = {1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'ipv6-icmp'}
_NAMED = {'tcp': 'tcp', 'udp': 'udp', 'icmp': 'icmp',
          'icmpv6': 'ipv6-icmp'}
# ICMPv6 neighbour discovery and MLD, always allowed to the VM; the VM
# may send all but router advertisements (134).
_ND_IN = (130, 131, 132, 134, 135, 136, 143)
_ND_OUT = (130, 131, 132, 133, 135, 136, 143)
_RA = 134


@dataclasses.dataclass(frozen=True)
class PortFilter:
    """What one port's filter is made from."""

    binding: binding_mod.Binding
    zone: int
    groups: tuple
    tap: str = None

    @property
    def key(self):
        return binding_mod.name_key(self.binding.port_id)

    @property
    def stateful(self):
        return all(g.stateful for g in self.groups)


@dataclasses.dataclass
class Ruleset:
    """Chains and sets of ours, desired or observed.

    ``chains`` maps ``(family, table, chain)`` to its rules (the text
    after ``-A <chain>`` as iptables-save prints it); ``jumps`` holds the
    ``(family, table)`` whose built-in chain jumps to our hook chain;
    ``sets`` maps a set name to ``(family, frozenset of members)``.
    """

    chains: dict = dataclasses.field(default_factory=dict)
    jumps: set = dataclasses.field(default_factory=set)
    sets: dict = dataclasses.field(default_factory=dict)
    sysctls: dict = dataclasses.field(default_factory=dict)
    #: the nftables bridge table: ARP chains ``{chain: rules}``, the
    #: map ``{qvb: chain}``, and whether its base chain dispatches
    arp: dict = dataclasses.field(default_factory=dict)
    arp_map: dict = dataclasses.field(default_factory=dict)
    arp_base: bool = False

    def keys(self):
        """Port name keys that have a chain here."""
        return ({sg.chain_key(c) for (_, _, c) in self.chains} |
                {sg.chain_key(c) for c in self.arp}) - {None}


@dataclasses.dataclass
class TableOps:
    """Commands for one table of one family, in the order they run."""

    declare: list = dataclasses.field(default_factory=list)
    delete_rules: list = dataclasses.field(default_factory=list)
    append: list = dataclasses.field(default_factory=list)
    hook: str = None          # 'insert' or 'delete' the built-in jump
    destroy: list = dataclasses.field(default_factory=list)
    create_hook: bool = False  # make the hook chain if it is missing

    def empty(self):
        return not (self.declare or self.delete_rules or self.append or
                    self.hook or self.destroy or self.create_hook)


@dataclasses.dataclass
class Batch:
    """One apply: set changes, then per-family restores, then cleanup."""

    tables: dict = dataclasses.field(default_factory=dict)
    set_creates: list = dataclasses.field(default_factory=list)
    set_adds: list = dataclasses.field(default_factory=list)
    set_dels: list = dataclasses.field(default_factory=list)
    set_destroys: list = dataclasses.field(default_factory=list)
    sysctls: list = dataclasses.field(default_factory=list)
    #: nftables bridge-table commands (see encode)
    arp: list = dataclasses.field(default_factory=list)
    #: port key -> kinds of repair (for logs, counters and tests)
    repairs: dict = dataclasses.field(default_factory=dict)

    def empty(self):
        return not (self.parts() or self.sysctls)

    def table(self, family, table):
        return self.tables.setdefault((family, table), TableOps())

    def parts(self):
        """What this batch writes: IP families, ``'ipset'``, ``'arp'``."""
        parts = {family for (family, _), ops in self.tables.items()
                 if not ops.empty()}
        if self.set_creates or self.set_adds or self.set_dels or \
                self.set_destroys:
            parts.add('ipset')
        if self.arp:
            parts.add('arp')
        return parts

    def chains_written(self):
        return sum(len(t.declare) for t in self.tables.values()) + len(
            [op for op in self.arp if op[0] == 'chain'])

    def set_writes(self):
        return len({name for name, _ in self.set_adds + self.set_dels} |
                   {name for name, _ in self.set_creates} |
                   set(self.set_destroys))

    def encode(self):
        """The primitives the privileged daemon takes."""
        tables = []
        for (family, table), ops in sorted(self.tables.items()):
            if ops.empty():
                continue
            lines = [['create_hook']] if ops.create_hook else []
            lines += [[':', c] for c in ops.declare]
            lines += [['-D', c, spec] for c, spec in ops.delete_rules]
            lines += [['-A', c, spec] for c, spec in ops.append]
            if ops.hook:
                lines.append(['hook', ops.hook])
            lines += [['-X', c] for c in ops.destroy]
            tables.append([family, table, lines])
        sets = ([['create', name, family]
                 for name, family in self.set_creates] +
                [['add', name, ip] for name, ip in self.set_adds] +
                [['del', name, ip] for name, ip in self.set_dels])
        return {'tables': tables, 'sets': sets,
                'destroy_sets': list(self.set_destroys),
                'sysctls': list(self.sysctls),
                'arp': [list(op) for op in self.arp]}


# -- render -------------------------------------------------------------
def _host(ip):
    """An address as iptables prints it: with its full-length prefix."""
    if '/' in ip:
        return ip
    return ip + ('/128' if ':' in ip else '/32')


def link_local(mac):
    """The EUI-64 IPv6 link-local address of a MAC."""
    octets = [int(x, 16) for x in mac.split(':')]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xff, 0xfe] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + eui)))


def _sources(port, family):
    """(address or CIDR, MAC) pairs the VM may send from, in order."""
    b = port.binding
    pairs = [(ip, b.mac_address) for ip in b.fixed_ips
             if binding_mod.ip_version(ip) == family]
    pairs += [(p.ip_address, p.mac_address) for p in b.allowed_address_pairs
              if binding_mod.ip_version(p.ip_address) == family]
    if family == 6:
        macs = [b.mac_address] + [p.mac_address
                                  for p in b.allowed_address_pairs]
        pairs += [(link_local(m), m) for m in macs]
    seen = []
    for ip, mac in pairs:
        item = (_host(ip), mac)
        if item not in seen:
            seen.append(item)
    return seen


def _proto(protocol, family):
    """The ``-p`` part of a rule, or '' for any protocol."""
    if protocol is None or protocol == 0:
        return ''
    if isinstance(protocol, str):
        return '-p %s' % _NAMED[protocol]
    return '-p %s' % _CORE_PROTOCOLS.get(protocol, protocol)


def _rule_spec(rule, family):
    """One security-group rule as an iptables rule spec (ACCEPT)."""
    parts = []
    if rule.remote_ip_prefix is not None:
        parts.append('%s %s' % ('-s' if rule.direction == sg.INGRESS
                                else '-d', rule.remote_ip_prefix))
    proto = _proto(rule.protocol, family)
    if proto:
        parts.append(proto)
    if rule.port_range_min is not None:
        if rule.protocol in ('tcp', 'udp'):
            ports = str(rule.port_range_min)
            if rule.port_range_max != rule.port_range_min:
                ports += ':%d' % rule.port_range_max
            parts.append('-m %s --dport %s' % (rule.protocol, ports))
        else:
            icmp = str(rule.port_range_min)
            if rule.port_range_max is not None:
                icmp += '/%d' % rule.port_range_max
            parts.append('-m icmp --icmp-type %s' % icmp
                         if rule.protocol == 'icmp'
                         else '-m icmp6 --icmpv6-type %s' % icmp)
    if rule.remote_group_id is not None:
        parts.append('-m set --match-set %s %s' % (
            sg.set_name(rule.remote_group_id, family),
            'src' if rule.direction == sg.INGRESS else 'dst'))
    parts.append('-j ACCEPT')
    return ' '.join(parts)


def _group_chains(group, family):
    """{chain: rules} of one group in one family: its rules, once."""
    chains = {}
    for kind, direction in (('i', sg.INGRESS), ('o', sg.EGRESS)):
        specs = []
        for rule in group.rules:
            if rule.family == family and rule.direction == direction:
                spec = _rule_spec(rule, family)
                if spec not in specs:
                    specs.append(spec)
        chains[sg.group_chain_name(kind, group.id)] = tuple(specs)
    return chains


def _icmp6(types, target):
    return ['-p ipv6-icmp -m icmp6 --icmpv6-type %d -j %s' % (t, target)
            for t in types]


def _common_chains(family):
    """{chain: rules}: what every port allows or drops, whatever its id.

    Every rule ends in ACCEPT or DROP, so jumping here from a port's
    chain means the same as having these rules in it: a match ends the
    packet, no match returns to the port's next rule.
    """
    to_vm, pre, post = sg.COMMON_CHAINS
    if family == 4:
        return {
            to_vm: ('-p udp -m udp --sport 67 --dport 68 -j ACCEPT',),
            # DHCP discovery, before the VM has an address.
            pre: ('-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp '
                  '--sport 68 --dport 67 -j ACCEPT',),
            post: ('-p udp -m udp --sport 68 --dport 67 -j ACCEPT',
                   '-p udp -m udp --sport 67 --dport 68 -j DROP')}
    return {
        to_vm: tuple(_icmp6(_ND_IN, 'ACCEPT') + [
            '-p udp -m udp --sport 547 --dport 546 -j ACCEPT']),
        # Duplicate address detection and MLD from the unspecified
        # address, then no router advertisements from the VM.
        pre: tuple(['-s ::/128 -d ff02::/16 -p ipv6-icmp -m icmp6 '
                    '--icmpv6-type %d -j ACCEPT' % t
                    for t in (131, 135, 143)] + _icmp6([_RA], 'DROP')),
        post: tuple(_icmp6(_ND_OUT, 'ACCEPT') + [
            '-p udp -m udp --sport 546 --dport 547 -j ACCEPT',
            '-p udp -m udp --sport 547 --dport 546 -j DROP'])}


def _state(port):
    if not port.stateful:
        return []
    return ['-m conntrack --ctstate INVALID -j DROP',
            '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT']


def _groups(port):
    """The port's groups, each once, in the binding's order."""
    seen = {}
    for group in port.groups:
        seen.setdefault(group.id, group)
    return list(seen.values())


def _port_chains(port, family):
    """{chain: rules} of one port in the filter table of one family.

    The port's chains hold what is its own (source check, conntrack
    state) and jump to the common chains and to each of its groups'
    chains: an ACCEPT there ends the packet, falling off returns here
    for the next group, and what no group allows is dropped. A source
    the port may use goes (``-g``) from the source check to what is
    allowed from any VM; no match there returns here, after the check.
    """
    pid = port.binding.port_id
    spoof = sg.chain_name('s', pid)
    to_vm, pre, post = sg.COMMON_CHAINS
    groups = _groups(port)
    out = ['-j %s' % pre, '-j %s' % spoof]
    out += _state(port)
    out += ['-j %s' % sg.group_chain_name('o', g.id) for g in groups]
    out.append('-j DROP')
    into = ['-j %s' % to_vm]
    into += _state(port)
    into += ['-j %s' % sg.group_chain_name('i', g.id) for g in groups]
    into.append('-j DROP')
    check = ['-s %s -m mac --mac-source %s -g %s' % (ip, mac, post)
             for ip, mac in _sources(port, family)]
    check.append('-j DROP')
    return {sg.chain_name('i', pid): into, sg.chain_name('o', pid): out,
            spoof: check}


def _dispatch(port):
    """Rules of the port in the hook chains: (table, rule)."""
    pid = port.binding.port_id
    qvb = port.binding.devices.qvb
    rules = [
        ('filter', '-m physdev --physdev-in %s --physdev-is-bridged -j %s'
         % (qvb, sg.chain_name('i', pid))),
        ('filter', '-m physdev --physdev-out %s --physdev-is-bridged -j %s'
         % (qvb, sg.chain_name('o', pid))),
        ('raw', '-i %s -j %s' % (qvb, sg.chain_name('z', pid))),
    ]
    if port.tap:
        rules.append(('raw', '-i %s -j %s' % (port.tap,
                                              sg.chain_name('z', pid))))
    return rules


def _arp_rules(port):
    """The VM may send ARP only for its own IPv4 addresses and MACs."""
    rules = []
    for ip, mac in _sources(port, 4):
        if ip.endswith('/32'):
            ip = ip[:-3]
        rules.append('arp saddr ether %s arp saddr ip %s return' % (mac, ip))
    rules.append('drop')
    return tuple(rules)


def render(ports, groups):
    """The Ruleset that filters ``ports`` (PortFilters); pure.

    ``groups`` (``{id: SecurityGroup}``) gives remote groups' members.
    """
    result = Ruleset()
    for family in FAMILIES:
        for table in TABLES:
            result.chains[(family, table, sg.HOOK_CHAINS[table][1])] = ()
        for chain, rules in _common_chains(family).items():
            result.chains[(family, 'filter', chain)] = rules
    for port in ports:
        pid = port.binding.port_id
        for family in FAMILIES:
            for chain, rules in _port_chains(port, family).items():
                result.chains[(family, 'filter', chain)] = tuple(rules)
            for group in _groups(port):
                for chain, rules in _group_chains(group, family).items():
                    result.chains[(family, 'filter', chain)] = rules
            zone = ('-j CT --zone %d' % port.zone if port.stateful
                    else '-j CT --notrack')
            result.chains[(family, 'raw', sg.chain_name('z', pid))] = (
                zone,)
            for table, rule in _dispatch(port):
                hook = (family, table, sg.HOOK_CHAINS[table][1])
                result.chains[hook] += (rule,)
            for group in port.groups:
                for rule in group.rules:
                    if rule.remote_group_id and rule.family == family:
                        name = sg.set_name(rule.remote_group_id, family)
                        result.sets[name] = (family, None)
        arp = sg.chain_name('a', pid)
        result.arp[arp] = _arp_rules(port)
        result.arp_map[port.binding.devices.qvb] = arp
    result.arp_base = bool(ports)
    if not ports:
        result.chains.clear()
    else:
        result.jumps = {(f, t) for f in FAMILIES for t in TABLES}
    return _fill_sets(result, groups)


def _fill_sets(ruleset, groups):
    """Give each set of ``ruleset`` its group's members."""
    by_name = {}
    for group in groups.values():
        for family in FAMILIES:
            by_name[sg.set_name(group.id, family)] = frozenset(
                group.members[family == 6])
    for name, (family, _) in list(ruleset.sets.items()):
        ruleset.sets[name] = (family, by_name.get(name, frozenset()))
    return ruleset


# -- parse --------------------------------------------------------------
def parse(dumps, protocols=None):
    """The Ruleset of ours in a firewall dump; everything else is skipped.

    ``dumps`` holds ``{4: iptables-save output, 6: ip6tables-save output,
    'ipset': ipset save output, 'sysctls': {name: value}}``;
    ``protocols`` maps protocol names iptables may print to numbers.
    """
    protocols = protocols or {}
    result = Ruleset()
    for family in FAMILIES:
        table = None
        for line in (dumps.get(family) or '').splitlines():
            if line.startswith('*'):
                table = line[1:].strip()
            elif table not in TABLES:
                continue
            elif line.startswith(':'):
                chain = line[1:].split(' ', 1)[0]
                if sg.chain_kind(chain):
                    result.chains.setdefault((family, table, chain), ())
            elif line.startswith('-A '):
                _, chain, *rest = line.split(' ', 2)
                spec = _normal(rest[0] if rest else '', protocols)
                if sg.chain_kind(chain):
                    key = (family, table, chain)
                    result.chains[key] = result.chains.get(key, ()) + (spec,)
                elif (sg.HOOK_CHAINS[table][0] == chain and
                      spec == '-j %s' % sg.HOOK_CHAINS[table][1]):
                    result.jumps.add((family, table))
    for line in (dumps.get('ipset') or '').splitlines():
        words = line.split()
        if len(words) < 3 or not sg.ours(words[1]):
            continue
        if words[0] == 'create':
            family = 6 if 'inet6' in words[3:5] else 4
            result.sets[words[1]] = (family, frozenset())
        elif words[0] == 'add' and words[1] in result.sets:
            family, members = result.sets[words[1]]
            result.sets[words[1]] = (family, members | {words[2]})
    result.sysctls = dict(dumps.get('sysctls') or {})
    _parse_arp(dumps.get('arp') or '', result)
    return result


def merge(fresh, last, parts):
    """``fresh`` (a look at ``parts`` only) completed from ``last``.

    A verification reads again only what a batch wrote; what it did not
    write is as the look before it found it.
    """
    result = Ruleset(sysctls=dict(fresh.sysctls))
    for family in FAMILIES:
        source = fresh if family in parts else last
        result.chains.update({k: v for k, v in source.chains.items()
                              if k[0] == family})
        result.jumps |= {j for j in source.jumps if j[0] == family}
    result.sets = dict((fresh if 'ipset' in parts else last).sets)
    source = fresh if 'arp' in parts else last
    result.arp = dict(source.arp)
    result.arp_map = dict(source.arp_map)
    result.arp_base = source.arp_base
    return result


_ELEMENT_RE = re.compile(r'"([^"]+)" : jump ([A-Za-z0-9_-]+)')
_DISPATCH = 'ether type arp oifname vmap @%s' % sg.ARP_MAP


def _parse_arp(text, result):
    """``nft list table bridge vifagent`` into the Ruleset's ARP part."""
    block, name, lines = None, None, []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(('chain ', 'map ')) and line.endswith('{'):
            block, name, lines = line.split()[0], line.split()[1], []
        elif line == '}' and block:
            if block == 'map' and name == sg.ARP_MAP:
                result.arp_map = dict(_ELEMENT_RE.findall(' '.join(lines)))
            elif block == 'chain' and name == sg.ARP_BASE:
                result.arp_base = lines == [_DISPATCH]
            elif block == 'chain' and sg.ours(name):
                result.arp[name] = tuple(lines)
            block = None
        elif block and line and not line.startswith(('type ', 'flags ')):
            lines.append(line)


def _normal(spec, protocols):
    """Protocol names iptables prints for numbers, back to numbers."""
    words = spec.split(' ')
    for i, word in enumerate(words[:-1]):
        if word == '-p' and words[i + 1] in protocols and \
                words[i + 1] not in _CORE_PROTOCOLS.values():
            words[i + 1] = str(protocols[words[i + 1]])
    return ' '.join(words)


# -- plan ---------------------------------------------------------------
def _rule_key(rule):
    """The port key a dispatch rule is for (from its target)."""
    return sg.chain_key(rule.rsplit(' ', 1)[-1])


def _target(rule):
    """The chain or verdict a rule jumps to, or None."""
    words = rule.split()
    for i, word in enumerate(words[:-1]):
        if word in ('-j', '-g'):
            return words[i + 1]
    return None


def _repair_key(chain):
    """Whose repair a chain's rewrite is: a port key, or a shared chain."""
    if sg.chain_kind(chain) == 'port':
        return sg.chain_key(chain)
    return chain


def plan(desired, observed, scope=None, keep=()):
    """The Batch that makes ``observed`` match ``desired``; pure.

    ``scope``: port keys whose objects may change (None: every key, as
    the full pass and garbage collection do); ``keep``: keys never
    touched (ports waiting for a group, or in error). Foreign chains and
    sets never appear in either Ruleset, so nothing here can name them.
    Group chains are shared by every port of the group: one goes when
    it is not wanted and no chain left after the batch jumps to it.
    """
    batch = Batch()
    keep = set(keep)

    def in_scope(key):
        return key not in keep and (scope is None or key in scope)

    removed_chains = set()
    for family in FAMILIES:
        for table in TABLES:
            ops = batch.table(family, table)
            hook = sg.HOOK_CHAINS[table][1]
            hk = (family, table, hook)
            want_hook = hk in desired.chains
            have_hook = hk in observed.chains
            want = {c: r for (f, t, c), r in desired.chains.items()
                    if (f, t) == (family, table) and c != hook}
            have = {c: r for (f, t, c), r in observed.chains.items()
                    if (f, t) == (family, table) and c != hook}
            # Chains (per port, per group, common): rewrite what differs.
            # New chains are declared before any rule uses them.
            for chain, rules in sorted(want.items()):
                if have.get(chain) != rules:
                    ops.declare.append(chain)
                    ops.append += [(chain, r) for r in rules]
                    batch.repairs.setdefault(_repair_key(chain), []).append(
                        'fw_chain_missing' if chain not in have
                        else 'fw_chain_drift')
            # Per-port chains not wanted go, for the ports in scope; then
            # group chains not wanted that nothing left jumps to.
            gone = [c for c in sorted(have) if c not in want and
                    sg.chain_kind(c) == 'port' and in_scope(sg.chain_key(c))]
            left = {c: r for c, r in have.items() if c not in gone}
            left.update(want)
            targets = {_target(r) for rules in left.values() for r in rules}
            gone += [c for c in sorted(have) if c not in want and
                     sg.chain_kind(c) == 'group' and c not in targets]
            for chain in gone:
                ops.declare.append(chain)
                ops.destroy.append(chain)
                removed_chains.add(chain)
            # Hook chain: single rules added or deleted, never rewritten,
            # so other ports' rules are not touched.
            if want_hook and not have_hook:
                # Made apart from the restore, never declared in it: a
                # declaration flushes, and another agent on the host may
                # have just made it and filled it.
                ops.create_hook = True
                batch.repairs.setdefault(None, []).append('fw_hook_chain')
            want_rules = desired.chains.get(hk, ())
            have_rules = observed.chains.get(hk, ()) if have_hook else ()
            for rule in have_rules:
                key = _rule_key(rule)
                if rule not in want_rules and (
                        key is None and scope is None or
                        key is not None and in_scope(key)):
                    ops.delete_rules.append((hook, rule))
            for rule in want_rules:
                if rule not in have_rules:
                    ops.append.append((hook, rule))
                    batch.repairs.setdefault(_rule_key(rule), []).append(
                        'fw_dispatch')
            if want_hook and (family, table) not in observed.jumps:
                ops.hook = 'insert'
                batch.repairs.setdefault(None, []).append('fw_jump')
            elif (not want_hook and have_hook and scope is None and
                  not keep and not _remaining(observed, family, table,
                                              removed_chains)):
                # Nothing of ours is left to filter: remove the hook and
                # the common chains too (other agents' ports would still
                # jump to them: they stay while any port chain does).
                if (family, table) in observed.jumps:
                    ops.hook = 'delete'
                # Declaring flushes it: its rules go with it.
                ops.delete_rules = [(c, r) for c, r in ops.delete_rules
                                    if c != hook]
                common = sorted(c for c in have
                                if sg.chain_kind(c) == 'common')
                ops.declare += [hook] + common
                ops.destroy += [hook] + common
    _plan_sets(batch, desired, observed, scope, removed_chains)
    _plan_arp(batch, desired, observed, in_scope)
    if desired.chains:
        batch.sysctls = [name for name in SYSCTLS
                         if observed.sysctls.get(name) != '1']
    return batch


def _plan_arp(batch, desired, observed, in_scope):
    """ARP checks in the bridge table: chain rewrites, map elements."""
    ops = batch.arp
    if desired.arp and not observed.arp_base:
        ops.append(('base',))
        batch.repairs.setdefault(None, []).append('fw_arp_base')
    for chain, rules in sorted(desired.arp.items()):
        if observed.arp.get(chain) != rules:
            ops.append(('chain', chain, list(rules)))
            batch.repairs.setdefault(sg.chain_key(chain), []).append(
                'fw_arp_chain')
    for qvb, chain in sorted(desired.arp_map.items()):
        have = observed.arp_map.get(qvb)
        if have != chain:
            if have is not None:
                ops.append(('delete_element', qvb))
            ops.append(('element', qvb, chain))
            batch.repairs.setdefault(sg.chain_key(chain), []).append(
                'fw_arp_element')
    for qvb, chain in sorted(observed.arp_map.items()):
        key = sg.chain_key(chain)
        if qvb not in desired.arp_map and key is not None and in_scope(key):
            ops.append(('delete_element', qvb))
    for chain in sorted(observed.arp):
        key = sg.chain_key(chain)
        if chain not in desired.arp and key is not None and in_scope(key):
            ops.append(('delete_chain', chain))


def _remaining(observed, family, table, removed):
    """True when port or group chains of ours stay in a table."""
    return any(c not in removed and
               sg.chain_kind(c) not in ('hook', 'common')
               for (f, t, c) in observed.chains if (f, t) == (family, table))


def _plan_sets(batch, desired, observed, scope, removed_chains):
    for name, (family, members) in sorted(desired.sets.items()):
        have = observed.sets.get(name)
        if have is None:
            batch.set_creates.append((name, family))
            have_members = frozenset()
        else:
            have_members = have[1]
        batch.set_adds += [(name, ip) for ip in sorted(members - have_members)]
        batch.set_dels += [(name, ip) for ip in sorted(have_members - members)]
    # A set goes when this batch drops the last rule that names it: sets
    # of ours that no chain of this batch named are left alone (another
    # agent on the host may be about to use them).
    rewritten = {c for t in batch.tables.values() for c in t.declare}
    dropped, used = set(), set()
    for (f, t, chain), rules in observed.chains.items():
        gone = chain in removed_chains or chain in rewritten
        for rule in rules:
            if '--match-set ' in rule:
                name = rule.split('--match-set ', 1)[1].split(' ')[0]
                (dropped if gone else used).add(name)
    for ops in batch.tables.values():
        for _, rule in ops.delete_rules:
            if '--match-set ' in rule:
                dropped.add(rule.split('--match-set ', 1)[1].split(' ')[0])
    batch.set_destroys = sorted(
        name for name in dropped - used
        if name in observed.sets and name not in desired.sets)


def differing(desired, observed, keys):
    """Port keys (of ``keys``) whose objects do not match; pure.

    A shared chain that differs counts against every port jumping to it.
    """
    keys = set(keys)
    check = plan(desired, observed, scope=keys)
    users = {}
    for (_, _, chain), rules in desired.chains.items():
        if sg.chain_kind(chain) == 'port':
            for rule in rules:
                users.setdefault(_target(rule), set()).add(
                    sg.chain_key(chain))
    bad = set()
    for key in check.repairs:
        if key is None:
            bad |= keys
        elif key in keys:
            bad.add(key)
        else:
            bad |= users.get(key, set()) & keys
    for name, (family, members) in desired.sets.items():
        if observed.sets.get(name, (family, None))[1] != members:
            bad |= keys
    return bad


class Firewall:
    """Observes and writes the firewall through the privileged daemon."""

    def __init__(self, timeout=30.0):
        # Imported here so the pure functions need no privsep.
        from vifagent import privileged
        from vifagent.privileged import firewall as priv_fw
        self._privileged = privileged
        self._priv = priv_fw
        self._protocols = None
        self.timeout = timeout

    def _call(self, entrypoint, *args):
        """One privileged call, within the timeout (PrivilegedError)."""
        return self._privileged.call(self._privileged.net_admin, entrypoint,
                                     *args, timeout=self.timeout)

    def protocols(self):
        """Protocol names to numbers, as iptables prints them."""
        if self._protocols is None:
            self._protocols = {}
            try:
                with open('/etc/protocols') as f:
                    for line in f:
                        words = line.split('#', 1)[0].split()
                        if len(words) >= 2 and words[1].isdigit():
                            self._protocols[words[0]] = int(words[1])
            except OSError:
                pass
        return self._protocols

    def observe(self, parts=None, last=None):
        """The firewall's chains and sets of ours, read in one dump.

        With ``parts`` (see Batch.parts) only those are read again; the
        rest is taken from ``last``, the Ruleset of the look before.
        """
        if parts is None:
            return parse(self._call(self._priv.dump_firewall),
                         self.protocols())
        fresh = parse(self._call(self._priv.dump_firewall, sorted(
            parts, key=str)), self.protocols())
        return merge(fresh, last, parts)

    def update_members(self, groups):
        """Bring the existing sets of ``groups`` to their members.

        Returns ``(sets written, error or None)``.
        """
        sets = {}
        for group in groups:
            for family in FAMILIES:
                sets[sg.set_name(group.id, family)] = [
                    family, list(group.members[family == 6])]
        written, error = self._call(self._priv.update_members, sets)
        return written, error

    def apply(self, batch):
        """Apply a batch; return None, or the error that stopped it."""
        if batch.empty():
            return None
        for name in batch.sysctls:
            LOG.warning('Setting %s to 1: port security filters bridged '
                        'traffic in the IP families', name)
        return self._call(self._priv.apply_firewall, batch.encode())
