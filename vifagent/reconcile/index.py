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

"""Which port an event is about: device names, taps and domains to ports.

Events carry a device name (netlink, OVSDB) or a domain UUID (libvirt);
the index maps them to the bound port ids they concern, so an event only
marks those ports dirty.
"""

import threading

from vifagent import binding as binding_mod


class PortIndex:
    """Device name key, tap name and instance UUID to port id."""

    def __init__(self):
        self._lock = threading.Lock()
        # First 11 characters of a port id (what its device names carry).
        self._keys = {}
        self._instance_of = {}
        self._taps = {}
        self._tap_of = {}

    def add(self, port_id, instance_uuid, tap):
        """Index a port being plugged, with its current tap (or None)."""
        with self._lock:
            self._keys[binding_mod.name_key(port_id)] = port_id
            self._instance_of[port_id] = instance_uuid
            self._set_tap(port_id, tap)

    def remove(self, port_id):
        with self._lock:
            self._keys.pop(binding_mod.name_key(port_id), None)
            self._instance_of.pop(port_id, None)
            self._set_tap(port_id, None)

    def _set_tap(self, port_id, tap):
        old = self._tap_of.pop(port_id, None)
        if old is not None and self._taps.get(old) == port_id:
            del self._taps[old]
        if tap is not None:
            self._tap_of[port_id] = tap
            self._taps[tap] = port_id

    def port_of(self, name):
        """The port a device name belongs to, or None."""
        with self._lock:
            if name in self._taps:
                return self._taps[name]
            key = binding_mod.device_key(name)
            return self._keys.get(key) if key else None

    def ports_of_names(self, names):
        return {pid for pid in map(self.port_of, names) if pid}

    def ports_of_instances(self, uuids):
        with self._lock:
            return {pid for pid, uuid in self._instance_of.items()
                    if uuid in uuids}
