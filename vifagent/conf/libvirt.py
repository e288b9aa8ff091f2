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

"""Options of the [libvirt] group."""

from oslo_config import cfg

GROUP = cfg.OptGroup('libvirt', title='libvirt options')

libvirt_opts = [
    cfg.BoolOpt(
        'enabled', default=True,
        help='Find the taps of ovs_hybrid ports in libvirt domains and '
             'follow their life cycle. When disabled such ports stay '
             'DOWN: only netns ports get a tap.'),
    cfg.StrOpt(
        'connection_uri', default='qemu:///system',
        help='libvirt URI the agent keeps one connection open to.'),
    cfg.FloatOpt(
        'reconnect_backoff_cap', default=30.0, min=0.5,
        help='Longest wait, in seconds, between attempts to reconnect to '
             'libvirtd. Waits start at 0.5 s and double.'),
    cfg.IntOpt(
        'keepalive_interval', default=5, min=1,
        help='Seconds between libvirt keepalive probes; a libvirtd that '
             'misses three in a row is treated as gone and reconnected.'),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(libvirt_opts, group=GROUP)


def list_opts():
    return {GROUP: libvirt_opts}
