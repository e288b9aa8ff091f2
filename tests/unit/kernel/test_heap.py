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

import os
import threading

import testtools

from vifagent.kernel import heap

_CHUNK = 64 * 1024        # under glibc's mmap threshold: from an arena
_CHUNKS = 512             # 32 MiB
_KEEP_EVERY = 64          # what stays alive pins the arena's top


def _rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class TestTrim(testtools.TestCase):

    def test_free_pages_inside_an_arena_go_back(self):
        # Fill an arena from a thread, free all but a few chunks spread
        # over it: free() alone keeps the pages, trim() returns them.
        kept = []

        def churn():
            chunks = [bytearray(_CHUNK) for _ in range(_CHUNKS)]
            kept.extend(chunks[_KEEP_EVERY - 1::_KEEP_EVERY])
            del chunks[:]

        thread = threading.Thread(target=churn)
        thread.start()
        thread.join()
        before = _rss()
        self.assertTrue(heap.trim())
        released = before - _rss()
        self.assertGreater(released, _CHUNK * _CHUNKS // 2,
                           'trim released %d bytes only' % released)
        self.assertEqual(_CHUNKS // _KEEP_EVERY, len(kept))
