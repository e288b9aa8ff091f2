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
* firewall batches name only chains and sets with our prefix, the only
  rule written to a built-in chain is the jump to our hook chain, and
  rules jump only to our chains or to plain verdicts.
"""

import ipaddress
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
    if not (secgroup.ours(name) and len(name) <= 28 and
            all(c.isalnum() or c in '-_' for c in name)):
        raise Refused('chain %r is not ours' % (name,))
    return name


def _rule(spec):
    """Check one rule spec; its targets must be ours or verdicts."""
    if not isinstance(spec, str) or '\n' in spec or '\r' in spec:
        raise Refused('rule %r refused' % (spec,))
    try:
        words = shlex.split(spec)
    except ValueError:
        raise Refused('rule %r does not parse' % (spec,))
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


def _table_text(table, lines):
    """The iptables-restore input of one table's checked commands."""
    builtin, hook = secgroup.HOOK_CHAINS[table]
    out = ['*' + table]
    for line in lines:
        if not isinstance(line, (list, tuple)) or not line:
            raise Refused('not a firewall command: %r' % (line,))
        op, args = line[0], list(line[1:])
        if op == ':' and len(args) == 1:
            out.append(':%s - [0:0]' % _our_chain(args[0]))
        elif op in ('-A', '-D') and len(args) == 2:
            out.append('%s %s %s' % (op, _our_chain(args[0]),
                                     _rule(args[1])))
        elif op == '-X' and len(args) == 1:
            out.append('-X %s' % _our_chain(args[0]))
        elif op == 'hook' and args == ['insert']:
            out.append('-I %s 1 -j %s' % (builtin, hook))
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


def check_firewall(batch):
    """Check an encoded firewall batch; return what the daemon runs.

    ``(tables, set_lines, destroy_lines, sysctls)`` where tables is a
    list of ``(family, restore text)``.
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
        by_family.setdefault(family, []).append(_table_text(table, lines))
    tables = [(f, ''.join(texts)) for f, texts in sorted(by_family.items())]
    sets = [_set_line(item) for item in batch.get('sets') or ()]
    destroys = []
    for name in batch.get('destroy_sets') or ():
        destroys.append('destroy %s' % check_set_name(name))
    sysctls = list(batch.get('sysctls') or ())
    for name in sysctls:
        if name not in FIREWALL_SYSCTLS:
            raise Refused('sysctl %r refused' % (name,))
    return tables, sets, destroys, sysctls
