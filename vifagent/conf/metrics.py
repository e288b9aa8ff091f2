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

"""Options of the [metrics] group."""

from oslo_config import cfg

GROUP = cfg.OptGroup('metrics', title='Metrics and health endpoint')

metrics_opts = [
    cfg.BoolOpt(
        'enabled', default=False,
        help='Serve /metrics (Prometheus text format) and /healthz over '
             'HTTP.'),
    cfg.HostAddressOpt(
        'bind_host', default='127.0.0.1',
        help='Address the metrics endpoint listens on.'),
    cfg.PortOpt(
        'bind_port', default=9797,
        help='Port the metrics endpoint listens on (0 picks a free one, '
             'shown in the log and in get_agent_state).'),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(metrics_opts, group=GROUP)


def list_opts():
    return {GROUP: metrics_opts}
