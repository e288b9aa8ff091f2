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

"""Firewall reads and writes, run inside the privsep daemon in batches.

One call dumps everything (``iptables-save``, ``ip6tables-save``,
``ipset save`` and ``nft list table bridge vifagent``, run side by side,
and the bridge-netfilter sysctls); one call applies a planned batch: set
changes in one ``ipset restore``, then, side by side, one
``iptables-restore --noflush`` per IP family (each table commits as one
nftables transaction) and the ARP checks of the bridge table in one
``nft -f`` transaction, then set removals. Every command is checked by
vifagent.privileged.guard first: only chains and sets with our prefix,
and only our own jump in the built-in chains, can be named.
"""

from concurrent import futures
import functools
import ipaddress
import os
import shutil
import socket
import subprocess
import threading

from oslo_log import log as logging
from pyroute2 import IPSet
from pyroute2.netlink import exceptions as nl_exc

from vifagent import privileged
from vifagent.privileged import guard
from vifagent import secgroup

LOG = logging.getLogger(__name__)

_PATH = os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin',
                         '/usr/bin', '/bin'])
_TIMEOUT = 60
_lock = threading.Lock()


def _tool(name):
    path = shutil.which(name, path=_PATH)
    if path is None:
        raise FileNotFoundError('%s is not installed' % name)
    return path


def _run(argv, stdin=None):
    """Run a tool; return (returncode, stdout, stderr)."""
    proc = subprocess.run([_tool(argv[0])] + argv[1:], input=stdin,
                          capture_output=True, text=True, timeout=_TIMEOUT,
                          check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _sysctl_path(name):
    return '/proc/sys/' + name.replace('.', '/')


def _at_once(calls):
    """Run independent calls side by side; return their results in order.

    Each tool spends most of its time in its own process and the kernel,
    so a dump or an apply costs about its slowest tool, not their sum.
    """
    if len(calls) < 2:
        return [call() for call in calls]
    with futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _optional(argv):
    """Run a tool that may not be installed: None when it is not."""
    try:
        return _run(argv)
    except FileNotFoundError:
        return None


_DUMPS = {
    4: lambda: _run(['iptables-save']),
    6: lambda: _run(['ip6tables-save']),
    'ipset': lambda: _optional(['ipset', 'save']),
    'arp': lambda: _optional(['nft', 'list', 'table', 'bridge',
                              secgroup.ARP_TABLE]),
}


def _dump(parts=None):
    """Dumps of ``parts`` (default all), taken at once, and the sysctls."""
    parts = [p for p in _DUMPS if parts is None or p in parts]
    with _lock:
        outputs = dict(zip(parts, _at_once([_DUMPS[p] for p in parts])))
    result = {}
    for family, tool in ((4, 'iptables-save'), (6, 'ip6tables-save')):
        if family in outputs:
            rc, out, err = outputs[family]
            if rc:
                raise OSError('%s failed: %s' % (tool, err.strip()))
            result[family] = out
    if 'ipset' in outputs:
        rc, out, err = outputs['ipset'] or (0, '', '')
        if rc:
            raise OSError('ipset save failed: %s' % err.strip())
        result['ipset'] = out
    if 'arp' in outputs:
        arp = outputs['arp']
        result['arp'] = arp[1] if arp and arp[0] == 0 else ''
    sysctls = {}
    for name in guard.FIREWALL_SYSCTLS:
        try:
            with open(_sysctl_path(name)) as f:
                sysctls[name] = f.read().strip()
        except OSError:
            sysctls[name] = None
    result['sysctls'] = sysctls
    return result


@privileged.net_admin.entrypoint
def dump_firewall(parts=None):
    """What the planner reads, in one call: all, or ``parts`` of it.

    ``parts``: IP families (4, 6), ``'ipset'``, ``'arp'``.
    """
    return _dump(parts)


@privileged.net_admin.entrypoint
def update_members(sets):
    """Bring sets of ours to ``{name: [family, [members]]}`` over netlink.

    A membership change is the hot path (a remote group's members): it
    costs one netlink conversation, no process. Sets that do not exist
    are skipped (no rule uses them yet). Returns ``[written, error]``.
    """
    checked = {}
    for name, (family, members) in sets.items():
        guard.check_set_name(name)
        checked[name] = (guard.check_family(family),
                         {guard.check_member(m, family) for m in members})
    written = 0
    with _lock:
        ipset = IPSet()
        try:
            for name, (family, want) in sorted(checked.items()):
                have = _members(ipset, name, family)
                if have is None:
                    continue
                af = socket.AF_INET if family == 4 else socket.AF_INET6
                for ip in sorted(want - have):
                    ipset.add(name, ip, family=af, exclusive=False)
                for ip in sorted(have - want):
                    ipset.delete(name, ip, family=af)
                written += bool(want ^ have)
        except (OSError, nl_exc.NetlinkError) as e:
            return [written, 'ipset %s: %s' % (name, e)]
        finally:
            ipset.close()
    return [written, None]


def _members(ipset, name, family):
    """The members of a set, or None when it does not exist."""
    attr = 'IPSET_ATTR_IPADDR_IPV4' if family == 4 else \
        'IPSET_ATTR_IPADDR_IPV6'
    try:
        messages = list(ipset.list(name))
    except nl_exc.NetlinkError:
        return None
    if not messages:
        return None
    members = set()
    for msg in messages:
        adt = msg.get_attr('IPSET_ATTR_ADT')
        for entry in adt.get_attrs('IPSET_ATTR_DATA') if adt else ():
            ip = entry.get_attr('IPSET_ATTR_IP_FROM')
            if ip is not None and ip.get_attr(attr):
                members.add(str(ipaddress.ip_address(ip.get_attr(attr))))
    return members


def _hooks(family, steps):
    """Make hook chains and their jumps, each only if missing.

    Not in the restore: declaring a chain there flushes it, and another
    agent on this host may have made and filled it since our dump.
    """
    tool = 'iptables' if family == 4 else 'ip6tables'
    for step in steps:
        if step[0] == 'create':
            _, table, chain = step
            rc, _, err = _run([tool, '-t', table, '-N', chain])
            if rc and 'exists' not in err:
                return '%s -N %s: %s' % (tool, chain, err.strip())
        else:
            _, table, builtin, chain = step
            rc, _, _ = _run([tool, '-t', table, '-C', builtin, '-j', chain])
            if rc:
                rc, _, err = _run([tool, '-t', table, '-I', builtin, '1',
                                   '-j', chain])
                if rc:
                    return '%s -I %s: %s' % (tool, builtin, err.strip())
    return None


def _restore(family, before, text):
    """One family's hook steps, then its restore; None or the error."""
    error = _hooks(family, before)
    if error:
        return error
    tool = 'iptables-restore' if family == 4 else 'ip6tables-restore'
    rc, _, err = _run([tool, '--noflush'], text)
    return '%s: %s' % (tool, err.strip()) if rc else None


def _nft(text):
    rc, _, err = _run(['nft', '-f', '-'], text)
    return 'nft: %s' % err.strip() if rc else None


def _apply(batch):
    """Apply an encoded Batch; return None or the first error.

    Sets are made first (rules name them) and removed last (once no
    rule does); in between, each IP family's restore and the bridge
    table's transaction are independent and run at once.
    """
    try:
        tables, sets, destroys, sysctls, arp = guard.check_firewall(batch)
    except guard.Refused as e:
        LOG.error('Refused firewall batch: %s', e)
        return 'refused: %s' % e
    with _lock:
        for name in sysctls:
            with open(_sysctl_path(name), 'w') as f:
                f.write('1\n')
            LOG.info('Set %s = 1', name)
        if sets:
            rc, _, err = _run(['ipset', '-exist', 'restore'],
                              '\n'.join(sets) + '\n')
            if rc:
                return 'ipset restore: %s' % err.strip()
        calls = [functools.partial(_restore, *table) for table in tables]
        if arp:
            calls.append(functools.partial(_nft, arp))
        for error in _at_once(calls):
            if error:
                return error
        if destroys:
            rc, _, err = _run(['ipset', '-exist', 'restore'],
                              '\n'.join(destroys) + '\n')
            if rc:
                return 'ipset destroy: %s' % err.strip()
    return None


@privileged.net_admin.entrypoint
def apply_firewall(batch):
    """Apply an encoded Batch; return None or the first error."""
    return _apply(batch)
