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

"""Options of the [ovs] group."""

from oslo_config import cfg

GROUP = cfg.OptGroup('ovs', title='Open vSwitch options')

ovs_opts = [
    cfg.StrOpt(
        'ovsdb_connection', default='tcp:127.0.0.1:6640',
        help='OVSDB server the agent connects to, e.g. tcp:127.0.0.1:6640 '
             'or unix:/var/run/openvswitch/db.sock.'),
    cfg.IntOpt(
        'ovsdb_timeout', default=10, min=1,
        help='Seconds an OVSDB transaction (including ovs-vswitchd '
             'taking the new configuration) may take before it fails.'),
    cfg.StrOpt(
        'integration_bridge', default='br-int',
        help='The OVS bridge qvo ports are attached to. Created at start '
             'when missing; never deleted.'),
    cfg.StrOpt(
        'datapath_type', default='system', choices=['system', 'netdev'],
        help='Datapath of the integration bridge when the agent creates '
             'it: "system" (kernel module) or "netdev" (userspace).'),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(ovs_opts, group=GROUP)


def list_opts():
    return {GROUP: ovs_opts}
