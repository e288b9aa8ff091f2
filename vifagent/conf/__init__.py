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

"""vifagent configuration: every option group registered on one object."""

from oslo_config import cfg

from vifagent.conf import agent
from vifagent.conf import default
from vifagent.conf import libvirt
from vifagent.conf import metrics
from vifagent.conf import ovs

CONF = cfg.CONF

_MODULES = (default, agent, ovs, libvirt, metrics)


def register_opts(conf):
    for module in _MODULES:
        module.register_opts(conf)


register_opts(CONF)
