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

"""The model's value types: what is observed, desired and concluded.

Shared by observe, plan, apply and the reconciler. Observed devices are
plain frozen records so the planner stays a pure function that unit tests
can feed without root or services.
"""

import dataclasses

from vifagent import binding as binding_mod
from vifagent.kernel import rtnl

__all__ = [
    'ACTIVE',
    'DOWN',
    'ERROR',
    'PENDING',
    'STATUSES',
    'OWNER_KEY',
    'STORE_KEY',
    'ALIAS_PREFIX',
    'alias_for',
    'DesiredPort',
    'Link',
    'Observed',
    'OvsPort',
    'OvsPortSpec',
    'PortResult',
]

OWNER_KEY = 'vifagent-owner'
#: Integration bridge external_ids key naming the store of its chains.
STORE_KEY = 'vifagent-store'

PENDING = 'PENDING'
DOWN = 'DOWN'
ACTIVE = 'ACTIVE'
ERROR = 'ERROR'
STATUSES = (PENDING, DOWN, ACTIVE, ERROR)

# The kernel's record of a device, and our marker on it.
Link = rtnl.Link
ALIAS_PREFIX = rtnl.ALIAS_PREFIX
alias_for = rtnl.alias_for


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
    #: the port's filter (a dataplane PortFilter) when port security is on
    filter: object = None
    #: (status, reason) that keeps the port on the dead VLAN: waiting for
    #: a security group (PENDING), or a filter that failed (ERROR)
    hold: tuple = None

    @property
    def port_id(self):
        return self.binding.port_id

    @property
    def devices(self):
        return self.binding.devices

    @property
    def tag(self):
        """The OVS tag once the host side is complete."""
        if not self.binding.admin_state_up or self.hold:
            return binding_mod.DEAD_VLAN
        return self.vlan

    @classmethod
    def for_binding(cls, binding, vlan, tap=None, tap_bridge=None,
                    down=None):
        if binding.owns_tap and tap is None:
            tap = binding.devices.tap
        return cls(binding=binding, vlan=vlan, tap=tap,
                   tap_bridge=tap_bridge, down=down)

    @property
    def key(self):
        """The port's name key (what its devices and chains carry)."""
        return binding_mod.name_key(self.binding.port_id)


@dataclasses.dataclass(frozen=True)
class OvsPortSpec:
    """An OVS port to add, or the changes to make to one.

    For an add every field is set; for an update only the fields that
    differ are (``None`` or empty leaves a column alone).
    """

    port_id: str
    name: str
    tag: int = None
    external_ids: dict = dataclasses.field(default_factory=dict)
    other_config: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PortResult:
    """The outcome of plugging or unplugging one port."""

    port_id: str
    status: str
    reason: str = None
    vlan: int = None
    devices: dict = None
    repairs: list = dataclasses.field(default_factory=list)
    foreign: list = dataclasses.field(default_factory=list)

    @property
    def failed(self):
        """The desired state was not reached: the port is tried again.

        ERROR, or PENDING: a port isolated on the dead VLAN because its
        Linux side is not complete yet.
        """
        return self.status in (ERROR, PENDING)

    def to_dict(self):
        return dataclasses.asdict(self)
