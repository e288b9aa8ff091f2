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

"""Kernel link operations, run inside the privsep daemon in batches.

The unprivileged side plans a list of primitive operations per port; one
entrypoint call executes them all on one long-lived netlink socket, so an
apply of any size costs one privsep round trip. Operations of one port run
in order and stop at that port's first failure; other ports go on.

An operation is a list ``[name, arg, ...]`` of JSON primitives (privsep
serialises them with msgpack): see ``_OPS`` for the vocabulary.
"""

import array
import errno
import fcntl
import random
import socket
import struct
import threading

from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from vifagent.dataplane import rtnl
from vifagent import privileged

LOG = logging.getLogger(__name__)

_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17
# Link groups used for batched deletion: a batch moves its devices into a
# fresh group from this range and deletes the group with one request, so
# the kernel pays one RCU grace period for the batch instead of one per
# device. The range is unlikely to be used by anything else, and the
# group's members are checked before the delete in any case.
_GROUP_BASE = 0x76660000
_GROUP_SPAN = 0xFFFF

# Up to this many devices are deleted one by one: a group costs two extra
# requests per device and a dump.
_GROUP_MIN = 4

_lock = threading.Lock()
_ipr = None
_rtnl = None


def _socket():
    """The process's long-lived netlink socket (opened on first use)."""
    global _ipr
    if _ipr is None:
        _ipr = IPRoute()
    return _ipr


def _reader():
    global _rtnl
    if _rtnl is None:
        _rtnl = rtnl.LinkReader()
    return _rtnl


def tx_checksum(ifname, enable=None):
    """Read (enable None) or set a device's tx checksum offload.

    TCP through OVS's userspace datapath carries no data while the veth
    offloads checksums, so qvb must have it off. Reading needs no
    privilege, which lets observation use this too.
    """
    cmd = _ETHTOOL_GTXCSUM if enable is None else _ETHTOOL_STXCSUM
    value = array.array('I', [cmd, 0 if enable is None else int(enable)])
    ifreq = struct.pack('16sP', ifname.encode(), value.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    return bool(value[1])


class LinkExecutor:
    """Executes planned link operations on one netlink socket."""

    def __init__(self, ipr):
        self.ipr = ipr

    # -- operations -------------------------------------------------------
    def create_bridge(self, name):
        # Created with STP, forward delay and multicast snooping already
        # off, so a new bridge never passes through the STP learning
        # states and needs no second request to fix them.
        self.ipr.link('add', ifname=name, kind='bridge', br_stp_state=0,
                      br_forward_delay=0, br_mcast_snooping=0)

    def set_bridge_options(self, name):
        # The kernel refuses forward_delay 0 while STP is on: two requests.
        self.ipr.link('set', ifname=name, kind='bridge', br_stp_state=0)
        self.ipr.link('set', ifname=name, kind='bridge', br_forward_delay=0,
                      br_mcast_snooping=0)

    def create_veth(self, name, peer, mtu):
        self.ipr.link('add', ifname=name, kind='veth', mtu=mtu,
                      peer={'ifname': peer, 'mtu': mtu})

    def create_netns_tap(self, name, netns, mac, mtu):
        """A veth whose peer is ``eth0`` (MAC, MTU) inside ``netns``."""
        self.ipr.link('add', ifname=name, kind='veth', mtu=mtu,
                      peer={'ifname': 'eth0', 'net_ns_fd': netns,
                            'address': mac, 'mtu': mtu})
        # eth0 is down in its namespace now: bringing it up means entering
        # the namespace, done by set_up_in_netns() in the wider context.

    def set_link(self, name, changes):
        """Apply merged set_* operations to one device in one request."""
        attrs = {}
        for op, value in changes:
            if op == 'set_alias':
                attrs['ifalias'] = value
            elif op == 'set_mtu':
                attrs['mtu'] = value
            elif op == 'set_up':
                attrs['state'] = 'up'
            elif op == 'set_master':
                attrs['master'] = self._index(value) if value else 0
        self.ipr.link('set', ifname=name, **attrs)

    def disable_ipv6(self, name):
        path = '/proc/sys/net/ipv6/conf/%s/disable_ipv6' % name
        try:
            with open(path, 'w') as f:
                f.write('1')
        except FileNotFoundError:
            # IPv6 is not built or is disabled host-wide: nothing to do.
            pass

    def tx_checksum_off(self, name):
        tx_checksum(name, False)

    # -- batches ----------------------------------------------------------
    def run(self, groups):
        """Run ``{key: [op, ...]}``; return ``{key: error}`` for failures.

        Consecutive set_* operations on one device are merged into a
        single netlink request (the planner emits them together).
        """
        errors = {}
        for key, ops in groups.items():
            try:
                for name, args, target in self._merged(ops):
                    try:
                        if name == 'set_link':
                            self.set_link(target, args)
                        else:
                            getattr(self, name)(*args)
                    except (OSError, nl_exc.NetlinkError, ValueError) as e:
                        raise _OpFailed('%s %s: %s' % (name, target, e))
            except _OpFailed as e:
                errors[key] = str(e)
                LOG.warning('Port %s: %s', key, errors[key])
        return errors

    @staticmethod
    def _merged(ops):
        """Yield (operation, args, device), merging runs of set_* ops."""
        pending, target = [], None
        for op in ops:
            name, args = op[0], list(op[1:])
            if name in _SETTERS:
                if pending and args[0] != target:
                    yield 'set_link', pending, target
                    pending = []
                target = args[0]
                pending.append((name, args[1] if len(args) > 1 else None))
                continue
            if pending:
                yield 'set_link', pending, target
                pending = []
            if name not in _OPS:
                raise _OpFailed('unknown operation %s' % name)
            yield name, args, args[0] if args else ''
        if pending:
            yield 'set_link', pending, target

    def _index(self, name):
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise OSError(errno.ENODEV, 'no device %s' % name)
        return found[0]

    def delete(self, names):
        """Delete the named links with as few kernel passes as possible.

        Missing devices are ignored (the goal is their absence). Returns
        ``{name: error}`` for devices that could not be deleted.
        """
        if len(names) > _GROUP_MIN:
            names = self._delete_group(names)
        errors = {}
        for name in names:
            try:
                self.ipr.link('del', ifname=name)
            except nl_exc.NetlinkError as e:
                if e.code != errno.ENODEV:
                    errors[name] = str(e)
        return errors

    def _delete_group(self, names):
        """Delete ``names`` as one link group; return what is left to do.

        The devices move into a fresh group that is deleted with one
        request, so the kernel pays one RCU grace period for the batch. The
        group is deleted only if it holds nothing but ``names``.
        """
        group = _GROUP_BASE + random.randint(1, _GROUP_SPAN)
        moved = []
        for name in names:
            try:
                self.ipr.link('set', ifname=name, group=group)
                moved.append(name)
            except nl_exc.NetlinkError as e:
                if e.code != errno.ENODEV:
                    return names
        members = {link['name'] for link in _reader().dump()
                   if link['group'] == group}
        if moved and members <= set(names):
            try:
                self.ipr.link('del', group=group)
                return []
            except nl_exc.NetlinkError as e:
                LOG.warning('Group delete failed (%s); deleting one by one',
                            e)
        return names


class _OpFailed(Exception):
    """One port's operation failed; its remaining operations are skipped."""


# The operations a plan may name: LinkExecutor methods, and the setters
# that are merged into one request per device.
_OPS = frozenset([
    'create_bridge', 'set_bridge_options', 'create_veth', 'create_netns_tap',
    'disable_ipv6', 'tx_checksum_off',
])
_SETTERS = frozenset(['set_alias', 'set_mtu', 'set_up', 'set_master'])


@privileged.net_admin.entrypoint
def apply_link_ops(groups, deletes):
    """Delete ``deletes`` then run ``groups``; return the errors.

    Returns ``{"ports": {key: error}, "deletes": {name: error}}``.
    """
    with _lock:
        executor = LinkExecutor(_socket())
        delete_errors = executor.delete(deletes)
        port_errors = executor.run(groups)
    return {'ports': port_errors, 'deletes': delete_errors}


@privileged.netns_admin.entrypoint
def set_up_in_netns(requests, ifname='eth0'):
    """Bring ``ifname`` up in each namespace of ``{key: netns}``.

    Returns ``{key: error}`` for the namespaces where that failed.
    """
    errors = {}
    for key, netns in requests.items():
        try:
            ipr = IPRoute(netns=netns)
        except OSError as e:
            errors[key] = 'netns %s: %s' % (netns, e)
            continue
        try:
            index = ipr.link_lookup(ifname=ifname)
            if not index:
                raise OSError(errno.ENODEV,
                              'no %s in netns %s' % (ifname, netns))
            ipr.link('set', index=index[0], state='up')
        except (OSError, nl_exc.NetlinkError) as e:
            errors[key] = 'bring up %s in netns %s: %s' % (ifname, netns, e)
        finally:
            ipr.close()
    return errors
