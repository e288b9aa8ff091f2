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

"""Linux side of the dataplane: read links over netlink, write via privsep.

Reading needs no privilege and happens in the agent on one long-lived
netlink socket. Writes are planned operations handed in one batch to the
privileged daemon (vifagent.privileged.linux).
"""

import dataclasses

from oslo_log import log as logging

from vifagent import binding
from vifagent.kernel import ethtool
from vifagent.kernel import rtnl
from vifagent import ops
from vifagent import privileged
from vifagent.privileged import linux as priv_linux

LOG = logging.getLogger(__name__)

# Below this many names, asking for each device is cheaper than reading
# every link on the host.
_GET_THRESHOLD = 8

# What a privileged batch may take beyond the base timeout, per operation
# and per deleted device (the kernel's RCU grace periods make deletes slow).
_PER_OP = 0.01
_PER_DELETE = 0.05


def interesting(name):
    return name.startswith(binding.OWNED_PREFIXES)


class LinuxDataplane:
    """Observes links and hands planned writes to the privileged side."""

    def __init__(self, timeout=30.0):
        self._reader = rtnl.LinkReader()
        #: Seconds a privileged batch may take, before the per-op share.
        self.timeout = timeout

    def close(self):
        self._reader.close()

    def observe(self, names=None):
        """Return ``{name: Link}`` for ``names`` (or every device we track).

        A few names are asked for one by one; more, or None, take one dump
        in which only the wanted devices are decoded.
        """
        if names is not None and len(names) <= _GET_THRESHOLD:
            found = (self._reader.get(name) for name in names)
            records = [link for link in found if link is not None]
        else:
            wanted = interesting if names is None else set(names).__contains__
            records = self._reader.dump(wanted)
        links = {}
        for link in records:
            if link.name.startswith(binding.BRIDGE_VETH_PREFIX) and \
                    link.kind == 'veth':
                link = dataclasses.replace(
                    link, tx_checksum=self._tx_checksum(link.name))
            links[link.name] = link
        return links

    @staticmethod
    def _tx_checksum(name):
        try:
            return ethtool.tx_checksum(name)
        except OSError as e:
            # The device went away between the dump and this read.
            LOG.debug('Cannot read offload of %s: %s', name, e)
            return None

    def apply(self, groups, deletes):
        """Run ``{key: [LinkOp]}`` after deleting ``deletes``.

        Returns ``{"ports": {key: error}, "deletes": {name: error}}``.
        """
        if not groups and not deletes:
            return {'ports': {}, 'deletes': {}}
        timeout = (self.timeout + _PER_DELETE * len(deletes) +
                   _PER_OP * sum(map(len, groups.values())))
        return privileged.call(privileged.net_admin,
                               priv_linux.apply_link_ops,
                               ops.encode_groups(groups), sorted(deletes),
                               timeout=timeout)

    def netns_up(self, requests):
        """Bring up ``{key: netns}``'s eth0; return ``{key: error}``."""
        if not requests:
            return {}
        return privileged.call(privileged.netns_admin,
                               priv_linux.set_up_in_netns, requests,
                               timeout=self.timeout + _PER_OP * len(requests))
