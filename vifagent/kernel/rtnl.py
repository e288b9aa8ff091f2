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

"""A lean rtnetlink link reader, and the Link record it produces.

Observation runs on every plug, every repair and every full pass, and a
general-purpose decoder spends most of its time on attributes the agent
never reads (statistics, per-family configuration). This reader asks the
kernel to skip statistics, looks at each message's name first, and decodes
only the handful of attributes a chain's health depends on.
"""

import dataclasses
import errno
import os
import socket
import struct
import threading

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: IFLA_IFALIAS prefix marking a Linux device as created by vifagent.
ALIAS_PREFIX = 'vifagent:'


def alias_for(port_id):
    """The IFLA_IFALIAS marking a Linux device as created for port_id."""
    return ALIAS_PREFIX + port_id


@dataclasses.dataclass(frozen=True)
class Link:
    """One Linux network device as netlink reports it."""

    name: str
    index: int
    kind: str = None          # 'bridge', 'veth', 'tun', ...
    alias: str = None
    mtu: int = 1500
    up: bool = False          # administratively up (IFF_UP)
    carrier: bool = False     # lower layer up (for a veth: the peer is up)
    master: int = None        # ifindex of the bridge it is enslaved to
    peer: int = None          # veth peer ifindex
    peer_netnsid: int = None  # set when the veth peer is in another netns
    stp: int = None
    forward_delay: int = None
    mcast_snooping: int = None
    ipv6_disabled: bool = True
    tx_checksum: bool = None  # read for qvb devices only
    group: int = 0

    def owned_by(self, port_id):
        return self.alias == alias_for(port_id)

    @property
    def marked(self):
        return bool(self.alias) and self.alias.startswith(ALIAS_PREFIX)


_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWLINK = 16
_RTM_GETLINK = 18
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLA_TYPE_MASK = 0x3fff

_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_LINK = 5
_IFLA_MASTER = 10
_IFLA_LINKINFO = 18
_IFLA_IFALIAS = 20
_IFLA_AF_SPEC = 26
_IFLA_GROUP = 27
_IFLA_EXT_MASK = 29
_IFLA_LINK_NETNSID = 37
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_IFLA_BR_FORWARD_DELAY = 1
_IFLA_BR_STP_STATE = 5
_IFLA_BR_MCAST_SNOOPING = 23
_IFLA_INET6_CONF = 2
_DEVCONF_DISABLE_IPV6 = 26
_RTEXT_FILTER_SKIP_STATS = 1 << 3

_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000

_HDR = struct.Struct('=IHHII')
_IFINFO = struct.Struct('=BxHiII')
_ATTR = struct.Struct('=HH')
_U32 = struct.Struct('=I')
_S32 = struct.Struct('=i')


def _attrs(data, start, end):
    """Yield (type, payload start, payload end) for each attribute."""
    while start + 4 <= end:
        length, kind = _ATTR.unpack_from(data, start)
        if length < 4:
            return
        yield kind & _NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _string(data, start, end):
    return data[start:end].split(b'\0', 1)[0].decode('utf-8', 'replace')


def _linkinfo(data, start, end, fields):
    info_data = None
    for kind, s, e in _attrs(data, start, end):
        if kind == _IFLA_INFO_KIND:
            fields['kind'] = _string(data, s, e)
        elif kind == _IFLA_INFO_DATA:
            info_data = (s, e)
    if fields.get('kind') != 'bridge' or info_data is None:
        return
    for kind, s, e in _attrs(data, *info_data):
        if kind == _IFLA_BR_STP_STATE:
            fields['stp'] = _U32.unpack_from(data, s)[0]
        elif kind == _IFLA_BR_FORWARD_DELAY:
            fields['forward_delay'] = _U32.unpack_from(data, s)[0]
        elif kind == _IFLA_BR_MCAST_SNOOPING:
            fields['mcast_snooping'] = data[s]


def _ipv6_disabled(data, start, end):
    for family, s, e in _attrs(data, start, end):
        if family != socket.AF_INET6:
            continue
        for kind, cs, ce in _attrs(data, s, e):
            if kind == _IFLA_INET6_CONF:
                offset = cs + 4 * _DEVCONF_DISABLE_IPV6
                if offset + 4 <= ce:
                    return bool(_S32.unpack_from(data, offset)[0])
    # No IPv6 state on the device: IPv6 is off for it.
    return True


def parse_link(data, start, end, wanted=None):
    """Decode one RTM_NEWLINK into a Link.

    Returns None when ``wanted`` (a predicate on the name) rejects it; the
    name is looked at before anything else is decoded.
    """
    _, _, index, flags, _ = _IFINFO.unpack_from(data, start + 16)
    attrs = list(_attrs(data, start + 32, end))
    name = None
    for kind, s, e in attrs:
        if kind == _IFLA_IFNAME:
            name = _string(data, s, e)
            break
    if name is None or (wanted is not None and not wanted(name)):
        return None
    fields = {'name': name, 'index': index, 'up': bool(flags & _IFF_UP),
              'carrier': bool(flags & _IFF_LOWER_UP), 'alias': None,
              'master': None, 'ipv6_disabled': True, 'group': 0}
    link = None
    for kind, s, e in attrs:
        if kind == _IFLA_MTU:
            fields['mtu'] = _U32.unpack_from(data, s)[0]
        elif kind == _IFLA_MASTER:
            fields['master'] = _U32.unpack_from(data, s)[0] or None
        elif kind == _IFLA_LINK:
            link = _U32.unpack_from(data, s)[0] or None
        elif kind == _IFLA_LINK_NETNSID:
            fields['peer_netnsid'] = _S32.unpack_from(data, s)[0]
        elif kind == _IFLA_IFALIAS:
            fields['alias'] = _string(data, s, e) or None
        elif kind == _IFLA_LINKINFO:
            _linkinfo(data, s, e, fields)
        elif kind == _IFLA_AF_SPEC:
            fields['ipv6_disabled'] = _ipv6_disabled(data, s, e)
        elif kind == _IFLA_GROUP:
            fields['group'] = _U32.unpack_from(data, s)[0]
    if fields.get('kind') == 'veth':
        fields['peer'] = link
    else:
        fields.pop('peer_netnsid', None)
    return Link(**fields)


class LinkReader:
    """One long-lived NETLINK_ROUTE socket for reading links."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                   socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0
        self._lock = threading.Lock()

    def close(self):
        self._sock.close()

    def _request(self, flags, attrs=b''):
        self._seq += 1
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        ext = _ATTR.pack(8, _IFLA_EXT_MASK) + _U32.pack(
            _RTEXT_FILTER_SKIP_STATS)
        payload = body + ext + attrs
        msg = _HDR.pack(16 + len(payload), _RTM_GETLINK,
                        _NLM_F_REQUEST | flags, self._seq, 0) + payload
        self._sock.send(msg)
        return self._seq

    def _replies(self, seq):
        """Yield (data, start, end) of each RTM_NEWLINK answering seq."""
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, msg_seq, _ = _HDR.unpack_from(data, offset)
                if length < 16:
                    return
                if msg_seq == seq:
                    if kind == _NLMSG_DONE:
                        return
                    if kind == _NLMSG_ERROR:
                        code = -_S32.unpack_from(data, offset + 16)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        return
                    if kind == _RTM_NEWLINK:
                        yield data, offset, offset + length
                offset += (length + 3) & ~3

    def dump(self, wanted=None):
        """Return decoded links whose name passes ``wanted`` (a predicate)."""
        with self._lock:
            seq = self._request(_NLM_F_DUMP)
            links = []
            for data, start, end in self._replies(seq):
                link = parse_link(data, start, end, wanted)
                if link is not None:
                    links.append(link)
            return links

    def get(self, name):
        """Return one Link, or None when there is no such link."""
        encoded = name.encode() + b'\0'
        attr = _ATTR.pack(4 + len(encoded), _IFLA_IFNAME) + encoded
        attr += b'\0' * (-len(attr) % 4)
        with self._lock:
            seq = self._request(0, attr)
            try:
                # A get is answered by one message (or an error), no DONE.
                for data, start, end in self._replies(seq):
                    return parse_link(data, start, end)
            except OSError as e:
                if e.errno == errno.ENODEV:
                    return None
                raise
        return None


_RTMGRP_LINK = 1
_RTM_DELLINK = 17
_SO_RCVBUFFORCE = 33
#: Receive buffer of the link monitor's socket, in bytes.
DEFAULT_RCVBUF = 4 << 20
_REOPEN_FIRST = 0.5
_REOPEN_CAP = 30.0


def _link_name(data, start, end):
    for kind, s, e in _attrs(data, start + 32, end):
        if kind == _IFLA_IFNAME:
            return _string(data, s, e)
    return None


class LinkMonitor:
    """Calls ``on_names(names)`` for every burst of link notifications.

    Runs on its own thread with its own socket subscribed to RTMGRP_LINK,
    whose receive buffer is ``rcvbuf`` bytes. When the kernel drops
    notifications (the socket buffer overflowed, ENOBUFS), some changes
    went unseen: ``on_overflow()`` is called so the caller can look at
    everything again. The thread never dies of an error: when the socket
    fails it is closed and opened again (with a backoff while that fails
    too), and ``on_overflow()`` is called, as events were missed
    meanwhile; ``healthy()`` is False until then.
    """

    def __init__(self, on_names, on_overflow, rcvbuf=DEFAULT_RCVBUF):
        self.on_names = on_names
        self.on_overflow = on_overflow
        self.rcvbuf = rcvbuf
        self.restarts = 0
        self.overflows = 0
        self._sock = self._open()
        self._failed = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='netlink',
                                        daemon=True)

    def _open(self):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                             socket.NETLINK_ROUTE)
        try:
            # Beyond net.core.rmem_max, which is small by default; needs
            # CAP_NET_ADMIN, which the agent has.
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((0, _RTMGRP_LINK))
        sock.settimeout(0.5)
        return sock

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def healthy(self):
        """Whether the thread runs and its socket works."""
        return self._thread.is_alive() and not self._failed

    def _overflowed(self):
        self.overflows += 1
        try:
            self.on_overflow()
        except Exception:
            LOG.exception('Link event overflow callback failed')

    def _run(self):
        backoff = _REOPEN_FIRST
        while not self._stopping.is_set():
            try:
                if self._sock is None:
                    self._sock = self._open()
                    self.restarts += 1
                    self._failed = False
                    backoff = _REOPEN_FIRST
                    LOG.info('Link monitor listening again')
                    # Whatever changed while it was down went unseen.
                    self._overflowed()
                self._watch()
            except Exception as e:
                if self._stopping.is_set():
                    return
                if not self._failed:
                    LOG.exception('Link monitor failed; reopening its '
                                  'socket')
                else:
                    LOG.warning('Link monitor cannot listen yet (%s); next '
                                'attempt in %.1f s', e, backoff)
                self._failed = True
                sock, self._sock = self._sock, None
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _REOPEN_CAP)

    def _watch(self):
        """Read events until stopped; an error other than ENOBUFS raises."""
        while not self._stopping.is_set():
            try:
                data = self._sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._overflowed()
                    continue
                if self._stopping.is_set():
                    return
                raise
            names = set()
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, _, _ = _HDR.unpack_from(data, offset)
                if length < 16:
                    break
                if kind in (_RTM_NEWLINK, _RTM_DELLINK):
                    name = _link_name(data, offset, offset + length)
                    if name:
                        names.add(name)
                offset += (length + 3) & ~3
            if names:
                try:
                    self.on_names(names)
                except Exception:
                    # A bad callback must not stop the monitor.
                    LOG.exception('Link event callback failed')
