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

"""Transmit checksum offload, read and set with the ethtool ioctl.

TCP through Open vSwitch's userspace datapath carries no data while a veth
offloads checksums, so qvb must have it off. Reading needs no privilege
(observation uses it); setting needs CAP_NET_ADMIN (the privileged daemon).
"""

import array
import fcntl
import socket
import struct

_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17


def tx_checksum(ifname, enable=None):
    """Read (enable None) or set a device's tx checksum offload."""
    cmd = _ETHTOOL_GTXCSUM if enable is None else _ETHTOOL_STXCSUM
    value = array.array('I', [cmd, 0 if enable is None else int(enable)])
    ifreq = struct.pack('16sP', ifname.encode(), value.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    return bool(value[1])
