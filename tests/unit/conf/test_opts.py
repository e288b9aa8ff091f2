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

from oslo_config import cfg
from oslotest import base

from vifagent.conf import opts


class TestListOpts(base.BaseTestCase):

    def test_every_registered_option_is_listed(self):
        listed = {(str(group), opt.dest) for group, group_opts in
                  opts.list_opts() for opt in group_opts}
        for group, name in (('DEFAULT', 'host'), ('agent', 'default_mtu'),
                            ('ovs', 'ovsdb_connection'),
                            ('ovs', 'integration_bridge'),
                            ('ovs', 'datapath_type'),
                            ('ovs', 'ovsdb_timeout')):
            self.assertIn((group, name), listed)
            section = cfg.CONF if group == 'DEFAULT' else cfg.CONF[group]
            self.assertIsNotNone(getattr(section, name))
