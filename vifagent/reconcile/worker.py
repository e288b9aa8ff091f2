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

"""The reconciliation worker: events mark ports dirty, one thread repairs.

Level-triggered: an event says only "look at this port again", never what
to do. The worker coalesces marks, asks the reconciler to repair the dirty
ports (observe, plan, apply, verify), retries failures with exponential
backoff up to a cap, and runs a full pass (every port, the integration
bridge, garbage collection) every resync interval with jitter, or at once
when an event says everything may have changed (lost netlink events, an
OVSDB reconnect, the bridge deleted).
"""

import collections
import random
import threading
import time

from oslo_log import log as logging

from vifagent import privileged

LOG = logging.getLogger(__name__)

# Events arrive in bursts (a plug makes several); wait this long after the
# first one so one pass handles the whole burst.
_COALESCE = 0.02
_RETRY_BASE = 0.5
_FAILED_PASS_RETRY = 5.0


class Stats:
    """Counters of the loop, shown by get_agent_state."""

    def __init__(self):
        self.passes = 0
        self.full_passes = 0
        self.repairs = collections.Counter()
        self.retries = 0
        self.errors = 0
        self.orphans_removed = 0
        self.last_full_pass_duration = None
        self.last_full_pass_at = None
        self.last_full_pass_ok = None

    def to_dict(self):
        return {'passes': self.passes, 'full_passes': self.full_passes,
                'repairs': dict(self.repairs), 'retries': self.retries,
                'errors': self.errors,
                'orphans_removed': self.orphans_removed,
                'last_full_pass_duration': self.last_full_pass_duration,
                'last_full_pass_at': self.last_full_pass_at,
                'last_full_pass_ok': self.last_full_pass_ok}


class Backoff:
    """Per-port retry schedule: exponential, capped, then give up.

    A port that keeps failing is retried after 0.5, 1, 2, 4 ... seconds
    (never more than ``cap``), ``max_retries`` times; then it stays in
    ERROR until the next full pass tries it again.
    """

    def __init__(self, max_retries, cap):
        self.max_retries = max_retries
        self.cap = cap
        self.failures = {}
        self.due = {}

    def failed(self, port_id, now):
        """Record a failure; return True if a retry was scheduled."""
        count = self.failures.get(port_id, 0) + 1
        self.failures[port_id] = count
        if count > self.max_retries:
            self.due.pop(port_id, None)
            return False
        self.due[port_id] = now + min(_RETRY_BASE * 2 ** (count - 1),
                                      self.cap)
        return True

    def succeeded(self, port_id):
        self.failures.pop(port_id, None)
        self.due.pop(port_id, None)

    def reset(self):
        """A full pass gives every port a fresh set of retries."""
        self.failures.clear()
        self.due.clear()

    def take_due(self, now):
        ready = [pid for pid, at in self.due.items() if at <= now]
        for pid in ready:
            del self.due[pid]
        return ready

    def next_due(self):
        return min(self.due.values()) if self.due else None


class Worker:
    """Runs ``reconcile(port_ids)`` and ``full_pass()`` on one thread.

    ``reconcile`` and ``full_pass`` come from the Reconciler that owns
    this worker and return ``{port_id: PortResult}``; the worker owns
    scheduling, retries and counters.
    """

    def __init__(self, reconcile, full_pass, interval, max_retries=5,
                 retry_cap=30.0):
        self._reconcile = reconcile
        self._full_pass = full_pass
        self.interval = interval
        self.stats = Stats()
        self.backoff = Backoff(max_retries, retry_cap)
        self._dirty = set()
        self._full = False
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = None
        self._next_full = None
        self._last_pass_error = None

    # -- event side ---------------------------------------------------------
    def mark(self, port_ids):
        port_ids = set(port_ids)
        if not port_ids:
            return
        with self._cond:
            self._dirty |= port_ids
            self._cond.notify()

    def mark_all(self, why):
        LOG.info('Full pass requested: %s', why)
        with self._cond:
            self._full = True
            self._cond.notify()

    # -- life cycle ---------------------------------------------------------
    def start(self):
        self._next_full = time.monotonic() + self._jittered()
        self._thread = threading.Thread(target=self._run, name='reconcile',
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout=10):
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _jittered(self):
        # Up to 10% early or late, so agents do not pass in lockstep.
        return self.interval * random.uniform(0.9, 1.1)

    # -- the loop -----------------------------------------------------------
    def run_full_pass(self):
        """One full pass now (also used at start, before serving)."""
        started = time.monotonic()
        ok = True
        try:
            results = self._full_pass()
        except Exception as e:
            self._log_failed_pass(e)
            results = {}
            ok = False
        else:
            self._last_pass_error = None
        self.backoff.reset()
        ok = self._account(results) and ok
        self.stats.full_passes += 1
        self.stats.last_full_pass_duration = round(
            time.monotonic() - started, 4)
        self.stats.last_full_pass_at = time.time()
        self.stats.last_full_pass_ok = ok
        # What threads freed since sits in glibc's arenas, here and in the
        # privileged daemons: hand it back once a pass, or the resident
        # size creeps (see vifagent.kernel.heap).
        privileged.trim_heaps()
        # A failed pass (OVSDB away, say) is tried again soon, not after a
        # whole interval.
        self._next_full = time.monotonic() + (
            self._jittered() if ok else min(_FAILED_PASS_RETRY,
                                            self.interval))
        return results

    def _log_failed_pass(self, error):
        # The same failure again (OVSDB away for minutes, say) is one line
        # per retry; its traceback was logged the first time.
        key = (type(error), str(error))
        if key == self._last_pass_error:
            LOG.warning('Full pass failed again: %s', error)
        else:
            LOG.exception('Full pass failed')
        self._last_pass_error = key

    def _run(self):
        while True:
            with self._cond:
                while not self._stopping and not self._work_ready():
                    self._cond.wait(self._wait_time())
                if self._stopping:
                    return
            time.sleep(_COALESCE)
            with self._cond:
                full, self._full = self._full, False
                dirty, self._dirty = self._dirty, set()
            now = time.monotonic()
            try:
                if full or now >= self._next_full:
                    self.run_full_pass()
                    continue
                retry = self.backoff.take_due(now)
                self.stats.retries += len(retry)
                ids = dirty | set(retry)
                if ids:
                    self.stats.passes += 1
                    self._account(self._reconcile(sorted(ids)))
            except Exception:
                # Never let the loop die; the next pass tries again.
                LOG.exception('Reconcile pass failed')

    def _work_ready(self):
        now = time.monotonic()
        due = self.backoff.next_due()
        return (self._full or bool(self._dirty) or now >= self._next_full or
                (due is not None and now >= due))

    def _wait_time(self):
        now = time.monotonic()
        deadlines = [self._next_full]
        due = self.backoff.next_due()
        if due is not None:
            deadlines.append(due)
        return max(0.0, min(deadlines) - now)

    def _account(self, results):
        """Count repairs and failures; schedule retries. True if all ok."""
        now = time.monotonic()
        ok = True
        for pid, result in results.items():
            self.stats.repairs.update(result.repairs)
            if result.failed:
                ok = False
                self.stats.errors += 1
                if not self.backoff.failed(pid, now):
                    LOG.error('Port %s still failing after %d retries: %s; '
                              'next full pass tries again', pid,
                              self.backoff.max_retries, result.reason)
            else:
                self.backoff.succeeded(pid)
        return ok
