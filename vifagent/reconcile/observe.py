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

"""Observation: what the host holds for a set of ports, read in bulk.

One netlink read (a dump, or a few gets) and one look at the OVSDB IDL
replica: never a command per device. The result is the planner's input.
"""

from vifagent import state


def names_of(ports):
    """Every device name the chains of these DesiredPorts use."""
    names = set()
    for port in ports:
        devices = port.devices
        names.update((devices.qbr, devices.qvb, devices.qvo))
        if port.tap:
            names.add(port.tap)
    return names


class Observer:
    """Reads links and OVS ports by name (or everything named like ours)."""

    def __init__(self, linux, ovs):
        self.linux = linux
        self.ovs = ovs

    def observe(self, names):
        """Return an Observed for names (None: every device of ours)."""
        return state.Observed(links=self.linux.observe(names),
                              ovs_ports=self.ovs.observe(names))
