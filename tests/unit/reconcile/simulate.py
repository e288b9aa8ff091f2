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

"""A model of what the kernel and OVS do with a plan, for planner tests.

It mirrors the semantics the planner relies on (deleting a veth end
deletes its peer, deleting a bridge releases its ports, a new veth has
offload on and is down) so property tests can check that applying a plan
converges: a second plan over the result is empty.
"""

import dataclasses
import itertools

from vifagent import binding
from vifagent import state

_index = itertools.count(10000)


def _replace(links, name, **changes):
    links[name] = dataclasses.replace(links[name], **changes)


def _by_index(links, index):
    for link in links.values():
        if link.index == index:
            return link
    return None


def _refresh_carrier(links, name):
    link = links[name]
    if link.kind != 'veth':
        _replace(links, name, carrier=link.up)
        return
    if link.peer_netnsid is not None:
        return  # the peer's state lives in its namespace
    peer = _by_index(links, link.peer)
    both = link.up and peer is not None and peer.up
    _replace(links, name, carrier=both)
    if peer is not None:
        _replace(links, peer.name, carrier=both)


def apply(plan, observed, bridge='br-int', errors=()):
    """Return the Observed that results from applying ``plan``."""
    links = dict(observed.links)
    ovs_ports = dict(observed.ovs_ports)
    for name in plan.deletes:
        link = links.pop(name, None)
        if link is None:
            continue
        if link.kind == 'veth' and link.peer_netnsid is None:
            peer = _by_index(links, link.peer)
            if peer is not None:
                links.pop(peer.name)
        if link.kind == 'bridge':
            for other in list(links.values()):
                if other.master == link.index:
                    _replace(links, other.name, master=None)
    for pid, ops in plan.link_ops.items():
        if pid in errors:
            continue
        for op in ops:
            _op(links, op.encode())
    for pid in plan.netns_up:
        # netns taps always carry the derived name.
        tap = binding.device_names(pid).tap
        if tap in links:
            _replace(links, tap, carrier=links[tap].up)
    for name in plan.ovs_deletes:
        ovs_ports.pop(name, None)
    for spec in plan.ovs_adds:
        ovs_ports[spec.name] = state.OvsPort(
            name=spec.name, bridge=bridge,
            tag=spec.tag, other_config=dict(spec.other_config),
            external_ids=dict(spec.external_ids), ofport=1)
    for spec in plan.ovs_updates:
        port = ovs_ports[spec.name]
        ovs_ports[spec.name] = dataclasses.replace(
            port, tag=port.tag if spec.tag is None else spec.tag,
            other_config=dict(port.other_config, **spec.other_config),
            external_ids=dict(port.external_ids, **spec.external_ids))
    return state.Observed(links=links, ovs_ports=ovs_ports)


def _op(links, op):
    name, args = op[0], op[1:]
    if name == 'create_bridge':
        dev, = args
        assert dev not in links, 'create of existing %s' % dev
        links[dev] = state.Link(name=dev, index=next(_index), kind='bridge',
                                stp=0, forward_delay=0,
                                mcast_snooping=0, ipv6_disabled=False)
    elif name == 'create_veth':
        dev, peer, mtu = args
        assert dev not in links and peer not in links
        a, b = next(_index), next(_index)
        links[dev] = state.Link(name=dev, index=a, kind='veth', mtu=mtu,
                                peer=b, tx_checksum=True,
                                ipv6_disabled=False)
        links[peer] = state.Link(name=peer, index=b, kind='veth', mtu=mtu,
                                 peer=a, ipv6_disabled=False)
    elif name == 'create_netns_tap':
        dev, netns, mac, mtu = args
        assert dev not in links
        links[dev] = state.Link(name=dev, index=next(_index), kind='veth',
                                mtu=mtu, peer=2,
                                peer_netnsid=0, ipv6_disabled=False)
    elif name == 'set_bridge_options':
        _replace(links, args[0], stp=0, forward_delay=0, mcast_snooping=0)
    elif name == 'set_alias':
        _replace(links, args[0], alias=args[1])
    elif name == 'set_mtu':
        _replace(links, args[0], mtu=args[1])
    elif name == 'set_up':
        _replace(links, args[0], up=True)
        _refresh_carrier(links, args[0])
    elif name == 'set_master':
        master = links[args[1]].index if args[1] else None
        _replace(links, args[0], master=master)
    elif name == 'disable_ipv6':
        _replace(links, args[0], ipv6_disabled=True)
    elif name == 'tx_checksum_off':
        _replace(links, args[0], tx_checksum=False)
    else:
        raise AssertionError('unknown op %s' % name)
