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
        'ovsdb_connection', default='unix:/var/run/openvswitch/db.sock',
        help='OVSDB server the agent connects to: unix:PATH (the local '
             'socket, which by default only root may open), ssl:HOST:PORT '
             '(mutual TLS; set ssl_key_file, ssl_cert_file and '
             'ssl_ca_cert_file) or tcp:HOST:PORT. tcp: is neither '
             'encrypted nor authenticated: anyone who can reach the port, '
             'any local user for 127.0.0.1, can rewrite the switch. Avoid '
             'it outside tests.'),
    cfg.StrOpt(
        'ssl_key_file',
        help='PEM private key of the agent\'s client certificate, for an '
             'ssl: ovsdb_connection. Required with ssl:.'),
    cfg.StrOpt(
        'ssl_cert_file',
        help='PEM client certificate the agent presents to ovsdb-server, '
             'for an ssl: ovsdb_connection. Required with ssl:.'),
    cfg.StrOpt(
        'ssl_ca_cert_file',
        help='PEM CA certificate that must have signed ovsdb-server\'s '
             'certificate, for an ssl: ovsdb_connection. Required with '
             'ssl:.'),
    cfg.IntOpt(
        'ovsdb_timeout', default=10, min=1,
        help='Seconds an OVSDB transaction (including ovs-vswitchd '
             'taking the new configuration) may take before it fails, '
             'plus ovsdb_timeout_per_port for each port it changes. Also '
             'the keepalive probe interval of the OVSDB session (at least '
             '5 s): a server silent for twice that is disconnected.'),
    cfg.FloatOpt(
        'ovsdb_timeout_per_port', default=0.2, min=0,
        help='Seconds added to ovsdb_timeout for each port a transaction '
             'adds, changes or removes: ovs-vswitchd takes time in '
             'proportion to them, so a big batch must not fail for being '
             'big.'),
    cfg.IntOpt(
        'max_ports_per_transaction', default=100, min=1,
        help='Most ports one OVSDB transaction adds, changes or removes; '
             'a bigger batch is split into transactions of this size, '
             'each waiting for ovs-vswitchd in its turn.'),
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
