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

"""libvirt side of the dataplane: which tap belongs to which port.

A binding names a domain (instance_uuid) and a guest MAC. The tap is the
``<target dev>`` of the domain's ``<interface>`` whose ``<mac address>``
is that MAC. The tap's own link-layer address is never used: libvirt sets
its first octet to 0xFE, so it never equals the guest MAC.
"""

import dataclasses
from xml.etree import ElementTree

_TAP_TYPES = ('ethernet', 'bridge')


@dataclasses.dataclass(frozen=True)
class Interface:
    """One ``<interface>`` of a live domain."""

    mac: str
    tap: str = None
    type: str = None
    bridge: str = None


def interfaces_from_xml(xml):
    """Return ``{guest mac: Interface}`` of a domain's XML description.

    Only interface types that give the host a tap (``ethernet`` and
    ``bridge``) are returned; an interface without a ``<target dev>``
    (a domain that is defined but not running) has ``tap`` None.
    """
    root = ElementTree.fromstring(xml)
    found = {}
    for node in root.findall('./devices/interface'):
        kind = node.get('type')
        mac = node.find('mac')
        if kind not in _TAP_TYPES or mac is None or not mac.get('address'):
            continue
        target = node.find('target')
        source = node.find('source')
        address = mac.get('address').lower()
        found[address] = Interface(
            mac=address,
            tap=target.get('dev') if target is not None else None,
            type=kind,
            bridge=source.get('bridge') if source is not None else None)
    return found
