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

import errno
import threading

from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from vifagent import binding
from vifagent.privileged import linux as priv_linux
from vifagent.reconcile import state

LOG = logging.getLogger(__name__)

_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000
# Below this many names, asking for each device is cheaper than parsing a
# dump of every link on the host.
_GET_THRESHOLD = 24


def _linkinfo(msg):
    info = msg.get('IFLA_LINKINFO')
    if info is None:
        return None, None
    return info.get('IFLA_INFO_KIND'), info.get('IFLA_INFO_DATA')


def _ipv6_disabled(msg):
    spec = msg.get('IFLA_AF_SPEC')
    if spec is None:
        return True
    for family, value in spec.get('attrs', ()):
        if family == 'AF_INET6':
            conf = value.get('IFLA_INET6_CONF') or {}
            return bool(conf.get('disable_ipv6', 1))
    # No IPv6 state on the device: IPv6 is off for it.
    return True


def parse_link(msg):
    """Turn an RTM_NEWLINK message into a state.Link."""
    kind, data = _linkinfo(msg)
    flags = msg['flags']
    fields = dict(
        name=msg.get('IFLA_IFNAME'),
        index=msg['index'],
        kind=kind,
        alias=msg.get('IFLA_IFALIAS') or None,
        mtu=msg.get('IFLA_MTU'),
        up=bool(flags & _IFF_UP),
        carrier=bool(flags & _IFF_LOWER_UP),
        master=msg.get('IFLA_MASTER') or None,
        ipv6_disabled=_ipv6_disabled(msg),
    )
    if kind == 'veth':
        fields['peer'] = msg.get('IFLA_LINK') or None
        fields['peer_netnsid'] = msg.get('IFLA_LINK_NETNSID')
    elif kind == 'bridge' and data is not None:
        fields['stp'] = data.get('IFLA_BR_STP_STATE')
        fields['forward_delay'] = data.get('IFLA_BR_FORWARD_DELAY')
        fields['mcast_snooping'] = data.get('IFLA_BR_MCAST_SNOOPING')
    return fields


def interesting(name):
    return name.startswith(binding.OWNED_PREFIXES)


class LinuxDataplane:
    """Observes links and hands planned writes to the privileged side."""

    def __init__(self):
        self._ipr = IPRoute()
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            self._ipr.close()

    def observe(self, names=None):
        """Return ``{name: Link}`` for ``names`` (or every device we track).

        A few names are fetched one by one; more, or None, take one dump.
        """
        with self._lock:
            if names is not None and len(names) <= _GET_THRESHOLD:
                msgs = []
                for name in names:
                    try:
                        msgs.extend(self._ipr.link('get', ifname=name))
                    except nl_exc.NetlinkError as e:
                        if e.code != errno.ENODEV:
                            raise
            else:
                msgs = self._ipr.link('dump')
        wanted = set(names) if names is not None else None
        links = {}
        for msg in msgs:
            name = msg.get('IFLA_IFNAME')
            if wanted is not None:
                if name not in wanted:
                    continue
            elif not interesting(name):
                continue
            fields = parse_link(msg)
            if name.startswith(binding.BRIDGE_VETH_PREFIX) and \
                    fields['kind'] == 'veth':
                fields['tx_checksum'] = self._tx_checksum(name)
            links[name] = state.Link(**fields)
        return links

    @staticmethod
    def _tx_checksum(name):
        try:
            return priv_linux.tx_checksum(name)
        except OSError as e:
            # The device went away between the dump and this read.
            LOG.debug('Cannot read offload of %s: %s', name, e)
            return None

    def apply(self, groups, deletes):
        """Run planned link operations; see privileged.linux."""
        if not groups and not deletes:
            return {'ports': {}, 'deletes': {}}
        return priv_linux.apply_link_ops(groups, sorted(deletes))

    def netns_up(self, requests):
        """Bring up ``{key: netns}``'s eth0; return ``{key: error}``."""
        if not requests:
            return {}
        return priv_linux.set_up_in_netns(requests)
