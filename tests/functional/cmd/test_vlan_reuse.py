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

"""A VLAN is never given to a new network while a stale port carries it.

Unbinding releases the network's VLAN in the store; if removing the OVS
port failed (OVSDB away), the old qvo keeps that tag, and a new network
given the same VLAN would bridge the old VM into another tenant's
network. The agent's OVSDB connection runs through a relay the test cuts
during the unbind.
"""

from tests.functional import base
from tests.functional.cmd import test_broker_outage as outage
from tests.functional import proxy as proxy_mod


def tag(qvo):
    row = base.ovs_row('Port', qvo, ['tag'])
    return row and row['tag']


class TestVlanReuse(outage.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.ovsdb = proxy_mod.SocketProxy(('127.0.0.1', 6640))
        self.addCleanup(self.ovsdb.cut)
        self.start_agent(sections={'ovs': {
            'ovsdb_connection': 'tcp:127.0.0.1:%d' % self.ovsdb.port,
            'ovsdb_timeout': 2}})

    def test_stale_port_keeps_its_vlan_to_itself(self):
        old, reply = self.bind()
        old_qvo = reply['devices']['qvo']
        self.assertEqual(reply['vlan'], tag(old_qvo))
        self.ovsdb.cut()
        gone = self.client.unbind_port(old['port_id'])
        self.assertTrue(gone['was_bound'])
        # The chain's OVS port could not be removed: it keeps its tag.
        self.assertEqual(reply['vlan'], tag(old_qvo))
        new = self.binding_dict(netns=self.make_netns())
        got = self.client.bind_port(new)
        self.assertNotEqual(reply['vlan'], got['vlan'])
        self.ovsdb.restore()
        port = outage.wait_for(
            lambda: (lambda p: p if p['status'] == 'ACTIVE' else None)(
                self.client.get_port(new['port_id'])), 60,
            'the new port active once OVSDB is back')[0]
        self.assertEqual(got['vlan'], port['vlan'])
        self.assertEqual(got['vlan'], tag(port['devices']['qvo']))
        self.assertNotEqual(tag(port['devices']['qvo']), tag(old_qvo))
