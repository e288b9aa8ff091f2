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

"""Run part of a test inside a named network namespace.

``inside(name)`` moves the calling thread (only that thread) into the
namespace ``ip netns add`` made and back out afterwards. A socket opened
inside stays in that namespace after the thread leaves, so a test can
listen on the namespace's loopback, or reach a server listening there,
and relay from the host's side.
"""

import contextlib
import ctypes
import os

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, 'setns: %s' % os.strerror(err))


@contextlib.contextmanager
def inside(name):
    """The calling thread in network namespace ``name`` for the block."""
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY)
    try:
        target = os.open(os.path.join('/run/netns', name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
