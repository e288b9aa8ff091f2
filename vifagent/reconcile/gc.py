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

"""Garbage-collection policy: which orphans to remove, and when.

An orphan is a chain this agent owns (OVS port marked with this host, or
a tombstone of an unbind) that no binding explains. It is removed after
``[agent] orphan_grace`` seconds of being seen as one, at once when the
store holds its tombstone. Devices named like ours that nothing makes
ours are reported once and left alone.
"""

import time

from oslo_log import log as logging

from vifagent.reconcile import plan as plan_mod

LOG = logging.getLogger(__name__)


class Collector:
    """Decides, pass after pass, which orphans are due for removal.

    ``suspended`` (a reason) stops all removal; ``max_removals`` bounds
    what one pass removes.
    """

    def __init__(self, host, grace, max_removals=50):
        self.host = host
        self.grace = grace
        self.max_removals = max_removals
        self.suspended = None
        self.deferred = 0
        self._seen = {}
        self._foreign_reported = set()

    def to_dict(self):
        return {'suspended': self.suspended, 'deferred': self.deferred}

    def due(self, observed, bound, tombstones, now=None):
        """Port ids to unplug now; foreign devices are logged once."""
        now = time.monotonic() if now is None else now
        orphans, foreign = plan_mod.find_orphans(
            observed, bound, self.host, tombstones)
        for pid in list(self._seen):
            if pid not in orphans:
                del self._seen[pid]
        # Tombstoned ports were unbound on request: no grace needed.
        due = [pid for pid in orphans
               if pid in tombstones or
               now - self._seen.setdefault(pid, now) >= self.grace]
        for name in foreign:
            if name not in self._foreign_reported:
                self._foreign_reported.add(name)
                LOG.warning('Device %s is named like ours but no binding '
                            'or marker makes it ours: leaving it alone',
                            name)
        if self.suspended:
            if due:
                LOG.warning('Keeping %d orphaned chains: garbage '
                            'collection is suspended (%s)', len(due),
                            self.suspended)
            self.deferred = len(due)
            return []
        self.deferred = max(0, len(due) - self.max_removals)
        if self.deferred:
            LOG.warning('Removing %d orphaned chains this pass, %d more '
                        'later: at most %d a pass', self.max_removals,
                        self.deferred, self.max_removals)
        return sorted(due)[:self.max_removals]
