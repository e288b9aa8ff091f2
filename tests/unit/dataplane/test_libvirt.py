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
