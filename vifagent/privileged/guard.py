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
* namespaces are named as the binding rules allow.
"""

from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.kernel import rtnl
from vifagent.ops import Op

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
