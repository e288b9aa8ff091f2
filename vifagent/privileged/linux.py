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

Operations arrive as the wire form of ``vifagent.ops.LinkOp`` (privsep
serialises primitives with msgpack) and are decoded here: anything outside
``vifagent.ops.Op`` is refused before any of the batch runs.
"""

import errno
import random
import threading

from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from vifagent import faults
from vifagent.kernel import ethtool
from vifagent.kernel import rtnl
from vifagent import ops as ops_mod
from vifagent.ops import Op
from vifagent import privileged
from vifagent.privileged import guard

LOG = logging.getLogger(__name__)

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

# Up to this many devices are read one by one to check a batch; more take
# one dump.
_GET_THRESHOLD = 8

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
        """Apply merged setter LinkOps to one device in one request."""
        attrs = {}
        for op in changes:
            if op.op is Op.SET_ALIAS:
                attrs['ifalias'] = op.args[0]
            elif op.op is Op.SET_MTU:
                attrs['mtu'] = op.args[0]
            elif op.op is Op.SET_UP:
                attrs['state'] = 'up'
            elif op.op is Op.SET_MASTER:
                attrs['master'] = self._index(op.args[0])
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
        ethtool.tx_checksum(name, False)

    # -- batches ----------------------------------------------------------
    def _handlers(self):
        """Each non-setter Op and the method that runs it."""
        return {
            Op.CREATE_BRIDGE: self.create_bridge,
            Op.SET_BRIDGE_OPTIONS: self.set_bridge_options,
            Op.CREATE_VETH: self.create_veth,
            Op.CREATE_NETNS_TAP: self.create_netns_tap,
            Op.DISABLE_IPV6: self.disable_ipv6,
            Op.TX_CHECKSUM_OFF: self.tx_checksum_off,
        }

    def run(self, groups):
        """Run ``{key: [LinkOp]}``; return ``{key: error}`` for failures.

        Consecutive setters on one device are merged into a single
        netlink request (the planner emits them together).
        """
        handlers = self._handlers()
        errors = {}
        for key, group in groups.items():
            try:
                for device, ops in _merged(group):
                    try:
                        if ops[0].op in ops_mod.SETTERS:
                            self.set_link(device, ops)
                        else:
                            handlers[ops[0].op](device, *ops[0].args)
                    except (OSError, nl_exc.NetlinkError, ValueError,
                            TypeError) as e:
                        raise _OpFailed('%s %s: %s' % (
                            ops[0].op.value, device, e))
            except _OpFailed as e:
                errors[key] = str(e)
                LOG.warning('Port %s: %s', key, errors[key])
            faults.point('privsep.mid_batch')
        return errors

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
        members = {link.name for link in _reader().dump()
                   if link.group == group}
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


def _merged(group):
    """Yield ``(device, [LinkOp])``, merging runs of one device's setters.

    Every other operation is yielded alone, in order.
    """
    pending = []
    for op in group:
        if pending and (op.op not in ops_mod.SETTERS or
                        op.device != pending[0].device):
            yield pending[0].device, pending
            pending = []
        if op.op in ops_mod.SETTERS:
            pending.append(op)
        else:
            yield op.device, [op]
    if pending:
        yield pending[0].device, pending


@privileged.net_admin.entrypoint
def apply_link_ops(groups, deletes):
    """Delete ``deletes`` then run ``groups``; return the errors.

    Returns ``{"ports": {key: error}, "deletes": {name: error}}``.
    """
    groups = ops_mod.decode_groups(groups)
    if not isinstance(deletes, (list, tuple)) or \
            not all(isinstance(name, str) for name in deletes):
        raise ValueError('deletes must be a list of device names')
    with _lock:
        names = {op.device for ops in groups.values() for op in ops}
        links = _read_links(names | set(deletes))
        port_errors, groups = _guarded(groups, links)
        delete_errors = {}
        for name in deletes:
            try:
                guard.check_delete(name, links)
            except guard.Refused as e:
                delete_errors[name] = 'refused: %s' % e
                LOG.error('Refused to delete %s: %s', name, e)
        deletes = [name for name in deletes if name not in delete_errors]
        executor = LinkExecutor(_socket())
        delete_errors.update(executor.delete(deletes))
        port_errors.update(executor.run(groups))
    return {'ports': port_errors, 'deletes': delete_errors}


def _read_links(names):
    """``{name: Link}`` of the named devices that exist, read here."""
    if len(names) <= _GET_THRESHOLD:
        found = (_reader().get(name) for name in names)
        return {link.name: link for link in found if link is not None}
    return {link.name: link for link in _reader().dump(names.__contains__)}


def _guarded(groups, links):
    """Split groups into refusals ``{key: error}`` and those allowed."""
    errors = {}
    for key, ops in groups.items():
        try:
            guard.check_group(key, ops, links)
        except guard.Refused as e:
            errors[key] = 'refused: %s' % e
            LOG.error('Refused operations for %r: %s', key, e)
    return errors, {key: ops for key, ops in groups.items()
                    if key not in errors}


@privileged.netns_admin.entrypoint
def set_up_in_netns(requests):
    """Bring eth0 up in each namespace of ``{port_id: netns}``.

    Returns ``{port_id: error}`` for the namespaces where that failed.
    """
    ifname = 'eth0'
    errors = {}
    for key, netns in requests.items():
        try:
            guard.check_netns(netns)
        except guard.Refused as e:
            errors[key] = 'refused: %s' % e
            continue
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
