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

"""Privilege separation: every kernel mutation runs in a privsep daemon.

``net_admin`` holds CAP_NET_ADMIN only and serves every operation on the
host's chains. ``netns_admin`` adds CAP_SYS_ADMIN, which entering another
network namespace requires; it starts only when a ``netns`` port (a
container, or a stand-in VM in tests and demos) is plugged, so a host with
libvirt guests never runs a daemon holding more than CAP_NET_ADMIN.
"""

import os
import shlex
import sys

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

net_admin = priv_context.PrivContext(
    'vifagent',
    cfg_section='vifagent_privileged',
    pypath=__name__ + '.net_admin',
    capabilities=[caps.CAP_NET_ADMIN],
    logger_name=__name__,
)

netns_admin = priv_context.PrivContext(
    'vifagent',
    cfg_section='vifagent_netns_privileged',
    pypath=__name__ + '.netns_admin',
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
    logger_name=__name__,
)

CONTEXTS = (net_admin, netns_admin)


def configure(conf=cfg.CONF):
    """Start privsep daemons with the local privsep-helper, not sudo.

    oslo.privsep's default helper command is ``sudo privsep-helper``; the
    agent already runs as root and hosts may have no sudo at all. Unless
    the operator set ``helper_command``, use the privsep-helper installed
    beside this interpreter. Call after the configuration is parsed.
    """
    helper = os.path.join(os.path.dirname(sys.executable), 'privsep-helper')
    args = [helper]
    try:
        config_files = conf.config_file or ()
    except cfg.NoSuchOptError:
        config_files = ()  # the configuration was never parsed
    for config_file in config_files:
        args += ['--config-file', config_file]
    for context in CONTEXTS:
        section = conf[context.cfg_section]
        if not section.helper_command:
            conf.set_default('helper_command', shlex.join(args),
                             group=context.cfg_section)


def run_in_process():
    """Run entrypoints in the calling process (tests that are root)."""
    for context in CONTEXTS:
        context.set_client_mode(False)
