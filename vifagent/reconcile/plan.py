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

"""The planner: a pure function from (desired, observed) to actions.

Nothing here touches the host. Given the bindings the agent holds and what
netlink and OVSDB report, it returns the minimal operations that make the
host match, and it never names a device the agent does not own: a device
is the agent's when it carries our marker, or when its name derives from a
port the agent is plugging (adoption: the device is then marked, not
re-created). A healthy chain yields an empty plan, which is how a replug
or a restart makes no writes at all.
"""

import dataclasses

from vifagent import binding as binding_mod
from vifagent.ops import LinkOp
from vifagent.ops import Op
from vifagent import state


@dataclasses.dataclass
class Plan:
    """Actions for one apply, grouped the way apply batches them."""

    #: port_id -> ordered LinkOps
    link_ops: dict = dataclasses.field(default_factory=dict)
    #: link names to delete, in one batch, before any link_ops run
    deletes: list = dataclasses.field(default_factory=list)
    #: OvsPortSpecs to add / update, names to delete (one transaction)
    ovs_adds: list = dataclasses.field(default_factory=list)
    ovs_updates: list = dataclasses.field(default_factory=list)
    ovs_deletes: list = dataclasses.field(default_factory=list)
    #: port_id -> netns whose eth0 must be brought up
    netns_up: dict = dataclasses.field(default_factory=dict)
    #: port_id -> why the chain cannot be built (a name is taken)
    conflicts: dict = dataclasses.field(default_factory=dict)
    #: devices with our names that are not ours: reported, never touched
    foreign: list = dataclasses.field(default_factory=list)
    #: port_id -> kinds of repair planned (for logs, metrics and tests)
    repairs: dict = dataclasses.field(default_factory=dict)

    def empty(self):
        return not (self.link_ops or self.deletes or self.ovs_adds or
                    self.ovs_updates or self.ovs_deletes or self.netns_up)

    def ports(self):
        """Port ids this plan changes something for."""
        ids = set(self.link_ops) | set(self.netns_up) | set(self.repairs)
        ids.update(spec.port_id for spec in self.ovs_adds + self.ovs_updates)
        return ids


def ovs_external_ids(binding, owner):
    """The Interface external_ids neutron, OVN and the agent read."""
    return {
        'iface-id': binding.port_id,
        'iface-status': 'active',
        'attached-mac': binding.mac_address,
        'vm-uuid': binding.instance_uuid,
        state.OWNER_KEY: owner,
    }


class _PortPlanner:
    """Plans one port's chain; collects into the shared Plan."""

    def __init__(self, plan, port, links, ovs_ports, owner, bridge):
        self.plan = plan
        self.port = port
        self.links = links
        self.ovs_ports = ovs_ports
        self.owner = owner
        self.bridge = bridge
        self.pid = port.port_id
        self.names = port.devices
        self.alias = state.alias_for(self.pid)
        self.mtu = port.binding.mtu
        self.ops = []
        self.repairs = []
        self.veth_created = False

    def _repair(self, kind):
        self.repairs.append(kind)

    def _conflict(self, name, link):
        self.plan.conflicts[self.pid] = (
            'device %s exists as a %s, not the expected kind' %
            (name, link.kind or 'device'))

    def run(self):
        self._bridge()
        if self.pid not in self.plan.conflicts:
            self._veth()
        if self.pid not in self.plan.conflicts:
            self._tap()
        self._ovs()
        if self.ops:
            self.plan.link_ops[self.pid] = self.ops
        if self.repairs:
            self.plan.repairs[self.pid] = self.repairs

    # -- Linux ------------------------------------------------------------
    def _common(self, link, name, mark=True, mtu=True):
        """Alias, MTU and up for an existing device we keep."""
        if mark and link.alias != self.alias:
            self.ops.append(LinkOp(Op.SET_ALIAS, name, (self.alias,)))
            self._repair('adopt' if not link.marked else 'alias')
        if mtu and link.mtu != self.mtu:
            self.ops.append(LinkOp(Op.SET_MTU, name, (self.mtu,)))
            self._repair('mtu')

    def _up(self, link, name):
        if link is None or not link.up:
            self.ops.append(LinkOp(Op.SET_UP, name))
            if link is not None:
                self._repair('down')

    def _bridge(self):
        name = self.names.qbr
        link = self.links.get(name)
        if link is None:
            self.ops += [LinkOp(Op.CREATE_BRIDGE, name),
                         LinkOp(Op.DISABLE_IPV6, name),
                         LinkOp(Op.SET_ALIAS, name, (self.alias,)),
                         LinkOp(Op.SET_UP, name)]
            self._repair('qbr_missing')
            return
        if link.kind != 'bridge':
            self._conflict(name, link)
            return
        if (link.stp, link.forward_delay, link.mcast_snooping) != (0, 0, 0):
            self.ops.append(LinkOp(Op.SET_BRIDGE_OPTIONS, name))
            self._repair('bridge_options')
        if not link.ipv6_disabled:
            self.ops.append(LinkOp(Op.DISABLE_IPV6, name))
            self._repair('ipv6')
        # A bridge's MTU follows its ports; it is not set directly.
        self._common(link, name, mtu=False)
        self._up(link, name)

    def _bridge_index(self):
        qbr = self.links.get(self.names.qbr)
        return qbr.index if qbr is not None else None

    def _veth(self):
        qvb_name, qvo_name = self.names.qvb, self.names.qvo
        qvb, qvo = self.links.get(qvb_name), self.links.get(qvo_name)
        for name, link in ((qvb_name, qvb), (qvo_name, qvo)):
            if link is not None and link.kind != 'veth':
                self._conflict(name, link)
                return
        paired = (qvb is not None and qvo is not None and
                  qvb.peer == qvo.index and qvo.peer == qvb.index and
                  qvb.peer_netnsid is None)
        if not paired:
            # A lone or mismatched end: remove it and make a new pair.
            if qvb is not None:
                self.plan.deletes.append(qvb_name)
            if qvo is not None and (qvb is None or qvb.peer != qvo.index):
                self.plan.deletes.append(qvo_name)
            self.ops.append(LinkOp(Op.CREATE_VETH, qvb_name,
                                   (qvo_name, self.mtu)))
            self.veth_created = True
            self._repair('veth_missing' if qvb is None and qvo is None
                         else 'veth_broken')
            qvb = qvo = None
        # Each device's set_* operations stay together: the privileged
        # side merges them into one netlink request per device.
        if qvb is None or qvb.tx_checksum:
            self.ops.append(LinkOp(Op.TX_CHECKSUM_OFF, qvb_name))
            if qvb is not None:
                self._repair('offload')
        if qvb is None:
            self.ops.append(LinkOp(Op.SET_ALIAS, qvb_name, (self.alias,)))
        else:
            self._common(qvb, qvb_name)
        bridge_index = self._bridge_index()
        if qvb is None or bridge_index is None or qvb.master != bridge_index:
            self.ops.append(LinkOp(Op.SET_MASTER, qvb_name, (self.names.qbr,)))
            if qvb is not None and bridge_index is not None:
                self._repair('qvb_master')
        self._up(qvb, qvb_name)
        if qvo is None:
            self.ops.append(LinkOp(Op.SET_ALIAS, qvo_name, (self.alias,)))
        else:
            self._common(qvo, qvo_name)
        # OVS does not bring system ports up: qvo is ours to set up.
        self._up(qvo, qvo_name)

    def _tap(self):
        name = self.port.tap
        if name is None:
            return
        tap = self.links.get(name)
        binding = self.port.binding
        if binding.owns_tap:
            if tap is not None and (tap.kind != 'veth' or
                                    tap.peer_netnsid is None):
                if tap.kind != 'veth':
                    self._conflict(name, tap)
                    return
                # Its peer is not in a namespace: not a usable VM stand-in.
                self.plan.deletes.append(name)
                tap = None
            if tap is None:
                self.ops += [LinkOp(Op.CREATE_NETNS_TAP, name,
                                    (binding.netns, binding.mac_address,
                                     self.mtu)),
                             LinkOp(Op.SET_ALIAS, name, (self.alias,))]
                self.plan.netns_up[self.pid] = binding.netns
                self._repair('tap_missing')
            else:
                self._common(tap, name)
                if not tap.carrier:
                    # No carrier: eth0 inside may be down (a veth has
                    # carrier only when both ends are up). Bringing it up
                    # again is harmless if it was only the tap.
                    self.plan.netns_up[self.pid] = binding.netns
                    self._repair('netns_down')
        elif tap is None:
            # The VM's tap is not there (yet): the port stays DOWN.
            return
        elif self.port.tap_bridge not in (None, self.names.qbr):
            # libvirt was told to put this tap on another bridge: moving
            # it would rewire a device configured for something else.
            self.plan.conflicts[self.pid] = (
                'libvirt puts tap %s on bridge %s, not %s' %
                (name, self.port.tap_bridge, self.names.qbr))
            return
        else:
            # libvirt's tap: never marked (the alias means "we made it,
            # we may delete it"), but MTU, master and up are ours to keep.
            self._common(tap, name, mark=False)
        bridge_index = self._bridge_index()
        if tap is None or bridge_index is None or tap.master != bridge_index:
            self.ops.append(LinkOp(Op.SET_MASTER, name, (self.names.qbr,)))
            if tap is not None and bridge_index is not None:
                self._repair('tap_master')
        self._up(tap, name)

    # -- OVS --------------------------------------------------------------
    def _ovs(self):
        name = self.names.qvo
        binding = self.port.binding
        ext_ids = ovs_external_ids(binding, self.owner)
        other = {'net_uuid': binding.network_id}
        tag = self.port.tag
        add = state.OvsPortSpec(self.pid, name, tag, ext_ids, other)
        port = self.ovs_ports.get(name)
        if port is None or port.bridge != self.bridge:
            if port is not None:
                self.plan.ovs_deletes.append(name)
                self._repair('ovs_wrong_bridge')
            else:
                self._repair('ovs_missing')
            self.plan.ovs_adds.append(add)
            return
        qvo = self.links.get(name)
        stale = (port.ifindex and qvo is not None and
                 port.ifindex != qvo.index)
        if self.veth_created or stale:
            # NOTE: ovs-vswitchd's userspace datapath keeps a port's old
            # device open when the device is re-created under the same
            # Port row: same ofport, no error, and nothing forwarded. Only
            # removing the port and adding it again makes it open the new
            # device (apply does that in two transactions).
            self.plan.ovs_deletes.append(name)
            self.plan.ovs_adds.append(add)
            self._repair('ovs_readd')
            return
        new_tag = tag if port.tag != tag else None
        if new_tag is not None:
            self._repair('ovs_tag')
        ext_diff = {k: v for k, v in ext_ids.items()
                    if port.external_ids.get(k) != v}
        if ext_diff:
            self._repair('ovs_external_ids')
        other_diff = {k: v for k, v in other.items()
                      if port.other_config.get(k) != v}
        if other_diff:
            self._repair('ovs_other_config')
        if new_tag is not None or ext_diff or other_diff:
            self.plan.ovs_updates.append(state.OvsPortSpec(
                self.pid, name, new_tag, ext_diff, other_diff))


def plan_plug(ports, observed, owner, bridge):
    """Plan what makes each DesiredPort's chain complete and correct."""
    plan = Plan()
    for port in ports:
        _PortPlanner(plan, port, observed.links, observed.ovs_ports, owner,
                     bridge).run()
    return plan


def plan_unplug(port_ids, observed):
    """Plan the removal of the chains of ``port_ids``.

    Only devices marked for that very port are removed; anything else
    with the port's names is reported as foreign and left alone. libvirt
    taps are never deleted: deleting the qbr releases them.
    """
    plan = Plan()
    links = observed.links
    for pid in port_ids:
        names = binding_mod.device_names(pid)
        port = observed.ovs_ports.get(names.qvo)
        if port is not None:
            if port.owned_by(pid):
                plan.ovs_deletes.append(names.qvo)
            else:
                plan.foreign.append(names.qvo)
        qvb = links.get(names.qvb)
        for name in (names.qvb, names.qvo, names.qbr, names.tap):
            link = links.get(name)
            if link is None:
                continue
            if not link.owned_by(pid):
                plan.foreign.append(name)
            elif (name == names.qvo and qvb is not None and
                  qvb.owned_by(pid) and qvb.peer == link.index):
                # Deleting qvb deletes its peer too.
                continue
            else:
                plan.deletes.append(name)
    return plan


def find_orphans(observed, bound_ids, host, tombstones=()):
    """Pick what garbage collection may remove, and what it must not.

    Returns ``(orphans, foreign)``: port ids whose remains unplug may
    remove, and device names to report and leave alone.

    A port is an orphan when it is not bound and either its OVS port
    carries this agent's owner marker (``vifagent-owner`` = ``host``) or
    the store holds its tombstone (an unbind whose removal was not
    confirmed). Marked Linux devices of any other unbound port may belong
    to another agent on this host; they are reported, never removed. So is
    every unmarked device named like ours that no bound port explains.
    """
    bound = set(bound_ids)
    bound_keys = {binding_mod.name_key(pid) for pid in bound}
    orphans = {pid for pid in tombstones if pid not in bound}
    for port in observed.ovs_ports.values():
        pid = port.external_ids.get('iface-id')
        if (port.external_ids.get(state.OWNER_KEY) == host and pid and
                pid not in bound):
            orphans.add(pid)
    # Names that are not ours (None) or that a port explains are skipped.
    explained = bound_keys | {binding_mod.name_key(pid) for pid in orphans}
    explained.add(None)
    foreign = [name for name in sorted(observed.links)
               if binding_mod.device_key(name) not in explained]
    return sorted(orphans), foreign
