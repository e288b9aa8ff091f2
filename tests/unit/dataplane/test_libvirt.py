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

from oslotest import base

from vifagent.dataplane import libvirt

RUNNING = """
<domain type='qemu' id='3'>
  <name>vm1</name>
  <uuid>4a1e6f3c-2b9d-4e7a-9c1f-0d2e3f4a5b6c</uuid>
  <devices>
    <interface type='ethernet'>
      <mac address='FA:16:3E:00:00:01'/>
      <target dev='vnet4' managed='no'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='fa:16:3e:00:00:02'/>
      <source bridge='qbr4a1e6f3c-2b'/>
      <target dev='tap4a1e6f3c-2b'/>
    </interface>
    <interface type='network'>
      <mac address='fa:16:3e:00:00:03'/>
      <source network='default'/>
      <target dev='vnet5'/>
    </interface>
  </devices>
</domain>
"""

DEFINED = """
<domain type='qemu'>
  <devices>
    <interface type='ethernet'>
      <mac address='fa:16:3e:00:00:01'/>
    </interface>
    <interface type='ethernet'/>
  </devices>
</domain>
"""


class TestInterfacesFromXml(base.BaseTestCase):

    def test_running_domain(self):
        found = libvirt.interfaces_from_xml(RUNNING)
        self.assertEqual({
            'fa:16:3e:00:00:01': libvirt.Interface(
                mac='fa:16:3e:00:00:01', tap='vnet4', type='ethernet'),
            'fa:16:3e:00:00:02': libvirt.Interface(
                mac='fa:16:3e:00:00:02', tap='tap4a1e6f3c-2b', type='bridge',
                bridge='qbr4a1e6f3c-2b'),
        }, found)

    def test_defined_but_not_running_has_no_tap(self):
        found = libvirt.interfaces_from_xml(DEFINED)
        self.assertEqual(['fa:16:3e:00:00:01'], list(found))
        self.assertIsNone(found['fa:16:3e:00:00:01'].tap)

    def test_no_devices(self):
        self.assertEqual({}, libvirt.interfaces_from_xml('<domain/>'))


def domain(state, xml=RUNNING):
    return libvirt.Domain.from_libvirt(
        '4A1E6F3C-2B9D-4E7A-9C1F-0D2E3F4A5B6C', 'vm1', state, xml)


class TestResolve(base.BaseTestCase):
    """Which tap a binding gets, and why its port is DOWN if it is."""

    MAC = 'fa:16:3e:00:00:01'

    def test_running(self):
        self.assertEqual(libvirt.Tap(device='vnet4'),
                         libvirt.resolve(domain(1), self.MAC))
        # blocked is running, only idle
        self.assertEqual(libvirt.Tap(device='vnet4'),
                         libvirt.resolve(domain(2), self.MAC))

    def test_uuid_is_lower_cased(self):
        self.assertEqual('4a1e6f3c-2b9d-4e7a-9c1f-0d2e3f4a5b6c',
                         domain(1).uuid)

    def test_mac_in_any_case(self):
        self.assertEqual('vnet4',
                         libvirt.resolve(domain(1), self.MAC.upper()).device)

    def test_bridge_interface_names_its_bridge(self):
        self.assertEqual(
            libvirt.Tap(device='tap4a1e6f3c-2b', bridge='qbr4a1e6f3c-2b'),
            libvirt.resolve(domain(1), 'fa:16:3e:00:00:02'))

    def test_paused_is_wired_but_down(self):
        self.assertEqual(libvirt.Tap(device='vnet4', down='domain is paused'),
                         libvirt.resolve(domain(3), self.MAC))

    def test_inactive_domain_tap_is_never_used(self):
        # Even when the XML still names a target dev.
        for number, name in ((5, 'shut off'), (6, 'crashed'),
                             (0, 'no state'), (42, 'no state')):
            self.assertEqual(libvirt.Tap(down='domain is %s' % name),
                             libvirt.resolve(domain(number), self.MAC))

    def test_unknown_domain(self):
        self.assertEqual(libvirt.Tap(down='domain is not defined'),
                         libvirt.resolve(None, self.MAC))
        self.assertEqual(libvirt.Tap(down='libvirt is not connected'),
                         libvirt.resolve(None, self.MAC, connected=False))

    def test_no_such_interface(self):
        # Interfaces without a host tap (type='network' here) are not ours.
        for mac in ('fa:16:3e:00:00:09', 'fa:16:3e:00:00:03'):
            self.assertEqual(
                libvirt.Tap(down='domain has no interface with MAC %s' % mac),
                libvirt.resolve(domain(1), mac))

    def test_interface_without_tap(self):
        self.assertEqual(
            libvirt.Tap(down='libvirt gave interface %s no tap' % self.MAC),
            libvirt.resolve(domain(1, DEFINED), self.MAC))
