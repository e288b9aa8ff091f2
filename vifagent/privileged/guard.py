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

"""What the privileged daemon agrees to do, checked inside the daemon.

The daemon does not trust its caller: a planner bug or a compromised agent
process must not be able to delete eth0 or br-int, put the uplink into a
qbr, write sysctls for ``all``, or reach into any namespace. Every
operation is checked against the port it is for (the group's key) and
against the devices as the daemon itself reads them:

* a device is ours when its name is one of our four prefixes plus that
  port's 11-character id, and it carries no marker but this port's
  (unmarked ones are adopted, as the design allows);
* any other device (a libvirt tap) may only be enslaved to the port's qbr,
  given an MTU and set up, and only if it is a tun device;
* a marker written is always this port's; a master is always its qbr;
* deletion needs the device's own marker, read again here (or is of an
  unmarked veth named like ours: an end of a chain being adopted);
* namespaces are named as the binding rules allow;
* firewall batches name only sets with our prefix and chains in one of
  our forms (hook, common, per port, per group), the only rule written
  to a built-in chain is the jump to our hook chain, and rules jump only
  to such chains or to plain verdicts.
"""

import ipaddress
import re
import shlex

from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.kernel import rtnl
from vifagent.ops import Op
from vifagent import secgroup

_TAP_OPS = frozenset([Op.SET_MASTER, Op.SET_MTU, Op.SET_UP])


class Refused(Exception):
    """An operation the daemon will not run; the message says why."""


def _our_name(name, port_id, prefixes=binding_mod.OWNED_PREFIXES):
    return isinstance(name, str) and any(
        name == binding_mod.device_name(prefix, port_id)
        for prefix in prefixes)


def _port_id(key):
    try:
        return binding_mod.validate_uuid(key)
    except exception.InvalidBinding:
        raise Refused('%r is not a port id' % (key,))


def _mtu(value):
    try:
        return binding_mod.validate_mtu(value)
    except exception.InvalidBinding:
        raise Refused('MTU %r out of range' % (value,))


def _check_ours(name, port_id, links):
    link = links.get(name)
    if link is not None and link.alias and \
            link.alias != rtnl.alias_for(port_id):
        raise Refused('%s carries the marker %r, not this port\'s' %
                      (name, link.alias))


def check_group(key, ops, links):
    """Refuse a port's operations unless every one is allowed.

    ``links`` maps the names the operations touch to their Link (as read
    by the daemon), or lacks them when the device does not exist.
    """
    port_id = _port_id(key)
    qbr = binding_mod.device_name(binding_mod.BRIDGE_PREFIX, port_id)
    for op in ops:
        name = op.device
        if not _our_name(name, port_id):
            link = links.get(name)
            if op.op not in _TAP_OPS:
                raise Refused('%s on %s: not a device of port %s' % (
                    op.op.value, name, port_id))
            if link is None or link.kind != 'tun':
                raise Refused('%s on %s: only a tun device outside our '
                              'names may be touched' % (op.op.value, name))
        else:
            _check_ours(name, port_id, links)
        _check_args(op, port_id, qbr)


def _check_args(op, port_id, qbr):
    args = op.args
    if op.op is Op.SET_ALIAS:
        if args != (rtnl.alias_for(port_id),):
            raise Refused('alias %r is not this port\'s marker' % (args,))
    elif op.op is Op.SET_MASTER:
        if args != (qbr,):
            raise Refused('master %r is not this port\'s bridge' % (args,))
    elif op.op is Op.SET_MTU:
        (mtu,) = args or (None,)
        _mtu(mtu)
    elif op.op is Op.CREATE_BRIDGE:
        if op.device != qbr or args:
            raise Refused('bridge %s is not this port\'s' % op.device)
    elif op.op is Op.CREATE_VETH:
        qvb = binding_mod.device_name(binding_mod.BRIDGE_VETH_PREFIX,
                                      port_id)
        qvo = binding_mod.device_name(binding_mod.OVS_VETH_PREFIX, port_id)
        if len(args) != 2 or (op.device, args[0]) != (qvb, qvo):
            raise Refused('veth %s/%r is not this port\'s' % (op.device,
                                                              args))
        _mtu(args[1])
    elif op.op is Op.CREATE_NETNS_TAP:
        tap = binding_mod.device_name(binding_mod.TAP_PREFIX, port_id)
        if op.device != tap or len(args) != 3:
            raise Refused('netns tap %s is not this port\'s' % op.device)
        check_netns(args[0])
        try:
            binding_mod.validate_mac(args[1])
        except exception.InvalidBinding:
            raise Refused('MAC %r refused' % (args[1],))
        _mtu(args[2])
    elif args:
        raise Refused('%s takes no arguments' % op.op.value)


def check_delete(name, links):
    """Refuse to delete anything but a device of ours, read here.

    Ours: named like ours and carrying its own marker. The one exception
    is an unmarked veth named like ours: a lone or mismatched end of a
    chain being adopted (one os-vif left, say), which the planner only
    replaces for a port it holds. Bridges, taps and anything else without
    its own marker are refused.
    """
    link = links.get(name)
    if link is None:
        return  # absent: nothing will be deleted
    key = binding_mod.device_key(name)
    if key is None:
        raise Refused('%s is not named like a device of ours' % name)
    alias = link.alias
    if alias is None and link.kind == 'veth':
        return
    if not (alias or '').startswith(rtnl.ALIAS_PREFIX) or \
            binding_mod.name_key(alias[len(rtnl.ALIAS_PREFIX):]) != key:
        raise Refused('%s does not carry its own vifagent marker' % name)


def check_netns(netns):
    try:
        binding_mod.validate_netns(netns)
    except exception.InvalidBinding:
        raise Refused('namespace %r refused' % (netns,))


FIREWALL_SYSCTLS = ('net.bridge.bridge-nf-call-iptables',
                    'net.bridge.bridge-nf-call-ip6tables')
_VERDICTS = frozenset(['ACCEPT', 'DROP', 'RETURN', 'CT'])


def _our_chain(name):
    """A hook, common, per-port or per-group chain name; nothing else."""
    if secgroup.chain_kind(name) is None:
        raise Refused('chain %r is not ours' % (name,))
    return name


# What rendered rules are made of: no quoting, no escapes, plain spaces,
# so splitting on spaces reads them exactly as a shell-like parser does.
_PLAIN_RULE = re.compile(r'[A-Za-z0-9 ./:,_-]*')


def _words(spec):
    """The words of a rule as iptables-restore reads them.

    A batch carries ~10^4 rules: shlex (pure Python) is kept for the rare
    spec with quotes or escapes, plain ones are split directly.
    """
    if _PLAIN_RULE.fullmatch(spec):
        return spec.split()
    try:
        return shlex.split(spec)
    except ValueError:
        raise Refused('rule %r does not parse' % (spec,))


def _rule(spec):
    """Check one rule spec; its targets must be ours or verdicts."""
    if not isinstance(spec, str) or '\n' in spec or '\r' in spec:
        raise Refused('rule %r refused' % (spec,))
    words = _words(spec)
    for i, word in enumerate(words):
        if word in ('-j', '--jump', '-g', '--goto'):
            target = words[i + 1] if i + 1 < len(words) else ''
            if target not in _VERDICTS:
                _our_chain(target)
        if word == '--match-set':
            name = words[i + 1] if i + 1 < len(words) else ''
            if not secgroup.ours(name):
                raise Refused('set %r is not ours' % (name,))
    return spec


def _table_text(table, lines, before):
    """The iptables-restore input of one table's checked commands.

    Commands that must not be part of the restore (making the hook chain
    and its jump only if missing) are appended to ``before`` as argv
    lists of idempotent steps.
    """
    builtin, hook = secgroup.HOOK_CHAINS[table]
    out = ['*' + table]
    for line in lines:
        if not isinstance(line, (list, tuple)) or not line:
            raise Refused('not a firewall command: %r' % (line,))
        op, args = line[0], list(line[1:])
        if op == 'create_hook' and not args:
            before.append(('create', table, hook))
        elif op == 'hook' and args == ['insert']:
            before.append(('jump', table, builtin, hook))
        elif op == ':' and len(args) == 1:
            out.append(':%s - [0:0]' % _our_chain(args[0]))
        elif op in ('-A', '-D') and len(args) == 2:
            out.append('%s %s %s' % (op, _our_chain(args[0]),
                                     _rule(args[1])))
        elif op == '-X' and len(args) == 1:
            out.append('-X %s' % _our_chain(args[0]))
        elif op == 'hook' and args == ['delete']:
            out.append('-D %s -j %s' % (builtin, hook))
        else:
            raise Refused('firewall command %r refused' % (line,))
    out.append('COMMIT')
    return '\n'.join(out) + '\n'


def check_set_name(name):
    """Refuse any set name that is not one of ours."""
    if not secgroup.ours(name) or len(name) > 31 or \
            not all(c.isalnum() or c in '-_' for c in name):
        raise Refused('set %r is not ours' % (name,))
    return name


def check_family(family):
    if family not in (4, 6):
        raise Refused('family %r refused' % (family,))
    return family


def check_member(member, family):
    """A set member: an address of the set's family, canonical."""
    try:
        ip = ipaddress.ip_address(member)
    except (TypeError, ValueError):
        raise Refused('member %r is not an address' % (member,))
    if ip.version != family:
        raise Refused('member %s is not of family %d' % (ip, family))
    return str(ip)


def _set_line(item):
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise Refused('not a set command: %r' % (item,))
    op, name, arg = item
    check_set_name(name)
    if op == 'create' and arg in (4, 6):
        return 'create %s hash:ip family %s' % (
            name, 'inet' if arg == 4 else 'inet6')
    if op in ('add', 'del') and isinstance(arg, str):
        try:
            ip = ipaddress.ip_address(arg)
        except ValueError:
            raise Refused('member %r is not an address' % (arg,))
        return '%s %s %s' % (op, name, ip)
    raise Refused('set command %r refused' % (item,))


_ARP_RULE = re.compile(r'arp saddr ether [0-9a-f]{2}(:[0-9a-f]{2}){5} '
                       r'arp saddr ip [0-9.]{7,15}(/[0-9]{1,2})? return|drop')


def _arp_chain(name):
    if not (isinstance(name, str) and secgroup.chain_key(name) and
            name[4] == 'a' and all(c.isalnum() or c == '-' for c in name)):
        raise Refused('ARP chain %r is not ours' % (name,))
    return name


def _qvb(name, chain=None):
    key = secgroup.chain_key(chain) if chain else (
        name[3:] if isinstance(name, str) else None)
    if not (isinstance(name, str) and key and
            name == binding_mod.BRIDGE_VETH_PREFIX + key and
            all(c.isalnum() or c == '-' for c in name)):
        raise Refused('%r is not the qvb of %r' % (name, chain))
    return name


def arp_text(ops):
    """The ``nft -f`` input of checked bridge-table commands."""
    table = 'bridge %s' % secgroup.ARP_TABLE
    base, amap = secgroup.ARP_BASE, secgroup.ARP_MAP
    out = []
    for op in ops or ():
        if not isinstance(op, (list, tuple)) or not op:
            raise Refused('not an ARP command: %r' % (op,))
        kind, args = op[0], list(op[1:])
        if kind == 'base' and not args:
            out += ['add table %s' % table,
                    'add chain %s %s { type filter hook forward priority 0; '
                    'policy accept; }' % (table, base),
                    'add map %s %s { type ifname : verdict; }' % (
                        table, amap),
                    'flush chain %s %s' % (table, base),
                    'add rule %s %s ether type arp oifname vmap @%s' % (
                        table, base, amap)]
        elif kind == 'chain' and len(args) == 2 and \
                isinstance(args[1], (list, tuple)):
            chain = _arp_chain(args[0])
            out += ['add chain %s %s' % (table, chain),
                    'flush chain %s %s' % (table, chain)]
            for rule in args[1]:
                if not isinstance(rule, str) or not _ARP_RULE.fullmatch(rule):
                    raise Refused('ARP rule %r refused' % (rule,))
                out.append('add rule %s %s %s' % (table, chain, rule))
        elif kind == 'element' and len(args) == 2:
            chain = _arp_chain(args[1])
            out.append('add element %s %s { "%s" : jump %s }' % (
                table, amap, _qvb(args[0], chain), chain))
        elif kind == 'delete_element' and len(args) == 1:
            out.append('delete element %s %s { "%s" }' % (
                table, amap, _qvb(args[0])))
        elif kind == 'delete_chain' and len(args) == 1:
            chain = _arp_chain(args[0])
            out += ['flush chain %s %s' % (table, chain),
                    'delete chain %s %s' % (table, chain)]
        else:
            raise Refused('ARP command %r refused' % (op,))
    return '\n'.join(out) + '\n' if out else ''


def check_firewall(batch):
    """Check an encoded firewall batch; return what the daemon runs.

    ``(tables, set_lines, destroy_lines, sysctls, arp)`` where tables is
    a list of ``(family, steps before, restore text)`` and arp the
    ``nft -f`` input.
    """
    if not isinstance(batch, dict):
        raise Refused('a firewall batch must be a dict')
    by_family = {}
    for item in batch.get('tables') or ():
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise Refused('not a table: %r' % (item,))
        family, table, lines = item
        if family not in (4, 6) or table not in secgroup.HOOK_CHAINS:
            raise Refused('table %r of family %r refused' % (table, family))
        before, texts = by_family.setdefault(family, ([], []))
        texts.append(_table_text(table, lines, before))
    tables = [(f, before, ''.join(texts))
              for f, (before, texts) in sorted(by_family.items())]
    sets = [_set_line(item) for item in batch.get('sets') or ()]
    destroys = []
    for name in batch.get('destroy_sets') or ():
        destroys.append('destroy %s' % check_set_name(name))
    sysctls = list(batch.get('sysctls') or ())
    for name in sysctls:
        if name not in FIREWALL_SYSCTLS:
            raise Refused('sysctl %r refused' % (name,))
    return tables, sets, destroys, sysctls, arp_text(batch.get('arp'))
