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

"""Garbage-collection policy: which orphans to remove, when, and whether.

An orphan is a chain this agent owns (OVS port marked with this host, or
a tombstone of an unbind) that no binding explains. It is removed after
``[agent] orphan_grace`` seconds of being seen as one, at once when the
store holds its tombstone. Devices named like ours that nothing makes
ours are reported once and left alone.

Collection never concludes "orphan" from missing knowledge: the
integration bridge records the identity of the store whose chains it
carries, and a new or different store suspends collection until the
controller's full view (sync_ports) has been stored.
"""

import time

from oslo_log import log as logging

from vifagent.reconcile import plan as plan_mod
from vifagent import state

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

    def check_store(self, observed, known, store, ovs):
        """Suspend collection if ``store`` did not build this host's chains.

        A new store (state_path not mounted yet, or mistyped) or another
        one, while chains marked with this host exist that it does not
        know (``known``: bound and tombstoned ids), would make every one
        of them an orphan: every VM on the host would lose its network.
        Returns the reason when collection was suspended by this call.
        """
        if self.suspended:
            return None
        mark = ovs.bridge_external_ids().get(state.STORE_KEY)
        if mark == store.identity:
            return None
        unknown = any(p.external_ids.get(state.OWNER_KEY) == self.host and
                      p.external_ids.get('iface-id') not in known
                      for p in observed.ovs_ports.values())
        if unknown and store.is_new:
            reason = ('the store is new (is state_path right?) but this '
                      'host has chains it does not hold')
        elif unknown and mark is not None:
            reason = ('the store (%s) is not the one that built this '
                      'host\'s chains (%s)' % (store.identity, mark))
        else:
            # A fresh host, or a store from before identities: adopt.
            ovs.set_bridge_external_ids({state.STORE_KEY: store.identity})
            return None
        LOG.error('Garbage collection suspended: %s; every chain is kept '
                  'until the controller sends its full view', reason)
        self.suspended = reason
        return reason

    def resume(self, store, ovs):
        """The store now holds the controller's view: record it, resume.

        Returns True when collection was suspended until now.
        """
        if not self.suspended:
            return False
        ovs.set_bridge_external_ids({state.STORE_KEY: store.identity})
        LOG.info('Garbage collection resumed: the store now holds the '
                 'controller\'s full view')
        self.suspended = None
        return True

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
                LOG.warning('Device %s is named like ours but no binding '
                            'or marker makes it ours: leaving it alone',
                            name)
        # Only what exists now: another agent's VMs come and go, and a
        # name kept after its device went would be kept for ever.
        self._foreign_reported = set(foreign)
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
