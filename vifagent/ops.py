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

"""The link operations a plan names and the privileged daemon runs.

Defined once, here: the planner builds ``LinkOp`` values, the dataplane
encodes them as JSON primitives for privsep, and the daemon decodes them
back, refusing anything that is not in ``Op``.
"""

import dataclasses
import enum

__all__ = [
    'LinkOp',
    'Op',
    'SETTERS',
    'decode_groups',
    'encode_groups',
]


class Op(enum.Enum):
    """Every kernel link operation vifagent may ask for."""

    CREATE_BRIDGE = 'create_bridge'
    SET_BRIDGE_OPTIONS = 'set_bridge_options'
    CREATE_VETH = 'create_veth'              # args: peer name, mtu
    CREATE_NETNS_TAP = 'create_netns_tap'    # args: netns, mac, mtu
    DISABLE_IPV6 = 'disable_ipv6'
    TX_CHECKSUM_OFF = 'tx_checksum_off'
    SET_ALIAS = 'set_alias'                  # args: alias
    SET_MTU = 'set_mtu'                      # args: mtu
    SET_UP = 'set_up'
    SET_MASTER = 'set_master'                # args: bridge name


#: Operations merged into one RTM_SETLINK per device.
SETTERS = frozenset([Op.SET_ALIAS, Op.SET_MTU, Op.SET_UP, Op.SET_MASTER])


@dataclasses.dataclass(frozen=True)
class LinkOp:
    """One operation on one device."""

    op: Op
    device: str
    args: tuple = ()

    def encode(self):
        """The wire form: ``[name, device, arg...]``."""
        return [self.op.value, self.device, *self.args]

    @classmethod
    def decode(cls, item):
        """Parse the wire form; raise ValueError for anything else."""
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            raise ValueError('not an operation: %r' % (item,))
        name, device, *args = item
        if not isinstance(device, str):
            raise ValueError('device must be a string: %r' % (device,))
        return cls(Op(name), device, tuple(args))


def encode_groups(groups):
    """``{key: [LinkOp]}`` to the primitives privsep carries."""
    return {key: [op.encode() for op in group]
            for key, group in groups.items()}


def decode_groups(groups):
    """The inverse of encode_groups; raise ValueError on bad input."""
    if not isinstance(groups, dict):
        raise ValueError('operation groups must be a dict')
    return {key: [LinkOp.decode(item) for item in group]
            for key, group in groups.items()}
