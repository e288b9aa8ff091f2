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

from vifagent import ops as ops_mod
from vifagent.privileged import linux


class TestMerge(base.BaseTestCase):

    def merged(self, wire):
        """Merge wire-form operations; show each run in wire form."""
        group = [ops_mod.LinkOp.decode(item) for item in wire]
        return [(device, [op.encode() for op in run])
                for device, run in linux._merged(group)]

    def test_setters_of_one_device_become_one_request(self):
        ops = [['create_veth', 'qvb1', 'qvo1', 1450],
               ['tx_checksum_off', 'qvb1'],
               ['set_alias', 'qvb1', 'vifagent:p'],
               ['set_master', 'qvb1', 'qbr1'], ['set_up', 'qvb1'],
               ['set_alias', 'qvo1', 'vifagent:p'], ['set_up', 'qvo1']]
        self.assertEqual([
            ('qvb1', [['create_veth', 'qvb1', 'qvo1', 1450]]),
            ('qvb1', [['tx_checksum_off', 'qvb1']]),
            ('qvb1', [['set_alias', 'qvb1', 'vifagent:p'],
                      ['set_master', 'qvb1', 'qbr1'], ['set_up', 'qvb1']]),
            ('qvo1', [['set_alias', 'qvo1', 'vifagent:p'],
                      ['set_up', 'qvo1']]),
        ], self.merged(ops))

    def test_order_is_kept_around_other_operations(self):
        ops = [['set_up', 'a'], ['disable_ipv6', 'a'], ['set_mtu', 'a', 9]]
        self.assertEqual(['set_up', 'disable_ipv6', 'set_mtu'],
                         [run[0][0] for _, run in self.merged(ops)])

    def test_unknown_operation_is_refused(self):
        # Decoded before anything runs: the whole batch is refused.
        e = self.assertRaises(ValueError, ops_mod.decode_groups,
                              {'p1': [['rm_rf', '/']]})
        self.assertIn("'rm_rf' is not a valid Op", str(e))

    def test_malformed_operations_are_refused(self):
        for bad in ({'p1': 'set_up'}, {'p1': [['set_up']]},
                    {'p1': [['set_up', 7]]}, ['set_up']):
            self.assertRaises((ValueError, TypeError),
                              ops_mod.decode_groups, bad)
