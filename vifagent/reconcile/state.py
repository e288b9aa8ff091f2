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

"""Value types shared by observe, plan and apply.

Observed devices are plain frozen records so the planner stays a pure
function that unit tests can feed without root or services.
"""

import dataclasses

from vifagent import binding as binding_mod

ALIAS_PREFIX = 'vifagent:'
OWNER_KEY = 'vifagent-owner'

PENDING = 'PENDING'
DOWN = 'DOWN'
ACTIVE = 'ACTIVE'
ERROR = 'ERROR'
STATUSES = (PENDING, DOWN, ACTIVE, ERROR)


def alias_for(port_id):
    """The IFLA_IFALIAS marking a Linux device as created for port_id."""
    return ALIAS_PREFIX + port_id


@dataclasses.dataclass(frozen=True)
class Link:
    """One Linux network device as netlink reports it."""

    name: str
    index: int
    kind: str = None          # 'bridge', 'veth', 'tun', ...
    alias: str = None
    mtu: int = 1500
    up: bool = False          # administratively up (IFF_UP)
    carrier: bool = False     # lower layer up (for a veth: the peer is up)
    master: int = None        # ifindex of the bridge it is enslaved to
    peer: int = None          # veth peer ifindex
    peer_netnsid: int = None  # set when the veth peer is in another netns
    stp: int = None
    forward_delay: int = None
    mcast_snooping: int = None
    ipv6_disabled: bool = True
    tx_checksum: bool = None  # read for qvb devices only
    group: int = 0

    def owned_by(self, port_id):
        return self.alias == alias_for(port_id)

    @property
    def marked(self):
        return bool(self.alias) and self.alias.startswith(ALIAS_PREFIX)


@dataclasses.dataclass(frozen=True)
class OvsPort:
    """One OVS Port with its single Interface."""

    name: str
    bridge: str
    tag: int = None
    other_config: dict = dataclasses.field(default_factory=dict)
    external_ids: dict = dataclasses.field(default_factory=dict)
    ofport: int = None
    error: str = None
    #: the ifindex ovs-vswitchd opened the port's device at
    ifindex: int = None

    @property
    def marked(self):
        return OWNER_KEY in self.external_ids

    def owned_by(self, port_id):
        """Marked by vifagent, for this very port."""
        return self.marked and self.external_ids.get('iface-id') == port_id


@dataclasses.dataclass
class Observed:
    """What the host holds: links and OVS ports by name."""

    links: dict = dataclasses.field(default_factory=dict)
    ovs_ports: dict = dataclasses.field(default_factory=dict)
    bridge_exists: bool = True


@dataclasses.dataclass(frozen=True)
class DesiredPort:
    """A binding with what the agent resolved for it.

    ``vlan`` is the network's local VLAN; ``tap`` is the VM's tap device
    (libvirt's target dev for ovs_hybrid ports, the agent's own tap for
    netns ports) or None while the VM has none. ``tap_bridge`` is the
    bridge libvirt enslaves the tap to itself (``type='bridge'``), and
    ``down`` says why the port is DOWN even when its chain is whole (the
    domain is stopped, paused, undefined...).
    """

    binding: binding_mod.Binding
    vlan: int
    tap: str = None
    tap_bridge: str = None
    down: str = None

    @property
    def port_id(self):
        return self.binding.port_id

    @property
    def devices(self):
        return self.binding.devices

    @property
    def tag(self):
        """The OVS tag once the host side is complete."""
        if not self.binding.admin_state_up:
            return binding_mod.DEAD_VLAN
        return self.vlan

    @classmethod
    def for_binding(cls, binding, vlan, tap=None, tap_bridge=None,
                    down=None):
        if binding.owns_tap and tap is None:
            tap = binding.devices.tap
        return cls(binding=binding, vlan=vlan, tap=tap,
                   tap_bridge=tap_bridge, down=down)
