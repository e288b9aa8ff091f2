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

from vifagent.privileged import linux


class TestMerge(base.BaseTestCase):

    def merged(self, ops):
        return list(linux.LinkExecutor._merged(ops))

    def test_setters_of_one_device_become_one_request(self):
        ops = [['create_veth', 'qvb1', 'qvo1', 1450],
               ['tx_checksum_off', 'qvb1'],
               ['set_alias', 'qvb1', 'vifagent:p'],
               ['set_master', 'qvb1', 'qbr1'], ['set_up', 'qvb1'],
               ['set_alias', 'qvo1', 'vifagent:p'], ['set_up', 'qvo1']]
        self.assertEqual([
            ('create_veth', ['qvb1', 'qvo1', 1450], 'qvb1'),
            ('tx_checksum_off', ['qvb1'], 'qvb1'),
            ('set_link', [('set_alias', 'vifagent:p'),
                          ('set_master', 'qbr1'), ('set_up', None)], 'qvb1'),
            ('set_link', [('set_alias', 'vifagent:p'), ('set_up', None)],
             'qvo1'),
        ], self.merged(ops))

    def test_order_is_kept_around_other_operations(self):
        ops = [['set_up', 'a'], ['disable_ipv6', 'a'], ['set_mtu', 'a', 9]]
        self.assertEqual(['set_link', 'disable_ipv6', 'set_link'],
                         [m[0] for m in self.merged(ops)])

    def test_unknown_operation_fails_the_port(self):
        class Broken(linux.LinkExecutor):
            def __init__(self):
                pass
        errors = Broken().run({'p1': [['rm_rf', '/']]})
        self.assertIn('unknown operation rm_rf', errors['p1'])
