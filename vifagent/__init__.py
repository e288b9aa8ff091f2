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

"""vifagent: wires VM ports into Open vSwitch through the hybrid chain."""

import warnings

from oslo_service import backend as _service_backend
from oslo_service.backend import exceptions as _service_exceptions

# oslo.service depends on eventlet, and futurist and oslo.privsep import it
# when it is installed, which prints a deprecation notice an operator can
# do nothing about: vifagent never runs on eventlet.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

# vifagent runs on threads, never eventlet. oslo.messaging imports
# oslo.service, whose backend defaults to eventlet unless one is chosen
# first; choosing it here, in the package, happens before any vifagent
# module imports oslo.messaging. A program that imported oslo.messaging
# before vifagent (oslo-config-generator, say) has made its own choice,
# which is left alone.
try:
    _service_backend.init_backend(_service_backend.BackendType.THREADING)
except _service_exceptions.BackendAlreadySelected:
    pass
