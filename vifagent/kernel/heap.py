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

"""Give the C heap's free pages back to the system.

glibc keeps what threads free in per-thread arenas (up to eight per core)
and returns memory to the system only from an arena's top. The agent's RPC
threads take turns through those arenas, so its resident size creeps up
while its live data stays flat. ``malloc_trim(0)`` releases every free
page of every arena; on a C library without it this does nothing.
"""

import ctypes

__all__ = ['trim']


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _malloc_trim()


def trim():
    """Release the heap's free pages; True if any were released."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
