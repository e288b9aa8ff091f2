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

import threading
import time

import fixtures

from oslotest import base

from vifagent.reconcile import worker
from vifagent import state


def result(pid, status='ACTIVE', repairs=()):
    return state.PortResult(port_id=pid, status=status,
                            repairs=list(repairs))


class TestBackoff(base.BaseTestCase):

    def test_doubles_then_caps_then_gives_up(self):
        b = worker.Backoff(max_retries=6, cap=3.0)
        delays = []
        for _ in range(6):
            self.assertTrue(b.failed('p', 100.0))
            delays.append(b.due['p'] - 100.0)
        self.assertEqual([0.5, 1.0, 2.0, 3.0, 3.0, 3.0], delays)
        self.assertFalse(b.failed('p', 100.0))
        self.assertNotIn('p', b.due)

    def test_success_and_reset_clear(self):
        b = worker.Backoff(max_retries=2, cap=10)
        b.failed('p', 0)
        b.succeeded('p')
        self.assertEqual({}, b.failures)
        b.failed('q', 0)
        b.failed('q', 0)
        b.reset()
        self.assertTrue(b.failed('q', 0))

    def test_take_due(self):
        b = worker.Backoff(max_retries=3, cap=10)
        b.failed('a', 0)
        b.failed('b', 5)
        self.assertEqual(['a'], b.take_due(1.0))
        self.assertEqual(5.5, b.next_due())
        self.assertEqual([], b.take_due(1.0))


class Recorder:
    """Stands in for the agent's two callbacks and records each call."""

    def __init__(self, statuses=None):
        self.calls = []
        self.full = 0
        self.statuses = statuses or {}
        self.event = threading.Event()

    def reconcile(self, ids):
        self.calls.append(list(ids))
        self.event.set()
        return {pid: result(pid, self.statuses.get(pid, 'ACTIVE'),
                            ['mtu']) for pid in ids}

    def full_pass(self):
        self.full += 1
        self.event.set()
        return {}


class TestReconciler(base.BaseTestCase):

    def make(self, recorder, interval=3600, max_retries=3, cap=0.05):
        r = worker.Worker(recorder.reconcile, recorder.full_pass,
                          interval, max_retries=max_retries, retry_cap=cap)
        r.start()
        self.addCleanup(r.stop)
        return r

    def wait_for(self, condition, timeout=5):
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def test_marks_coalesce_into_one_pass(self):
        rec = Recorder()
        r = self.make(rec)
        r.mark(['a'])
        r.mark(['b', 'a'])
        self.wait_for(lambda: rec.calls)
        time.sleep(0.1)
        self.assertEqual([['a', 'b']], rec.calls)
        self.assertEqual(1, r.stats.passes)
        self.assertEqual({'mtu': 2}, dict(r.stats.repairs))

    def test_failures_retry_with_backoff_then_stop(self):
        rec = Recorder({'bad': 'ERROR'})
        r = self.make(rec, max_retries=3, cap=0.05)
        r.mark(['bad'])
        self.wait_for(lambda: len(rec.calls) >= 4)
        time.sleep(0.3)
        self.assertEqual(4, len(rec.calls))  # one try, three retries
        self.assertEqual(3, r.stats.retries)
        self.assertEqual(4, r.stats.errors)
        # A full pass gives it fresh retries.
        rec.statuses['bad'] = 'ACTIVE'
        r.run_full_pass()
        self.assertEqual({}, r.backoff.failures)

    def test_mark_all_runs_a_full_pass(self):
        rec = Recorder()
        r = self.make(rec)
        r.mark_all('test')
        self.wait_for(lambda: rec.full == 1)
        self.assertEqual(1, r.stats.full_passes)
        self.assertTrue(r.stats.last_full_pass_ok)

    def test_periodic_full_pass(self):
        rec = Recorder()
        self.make(rec, interval=0.2)
        self.wait_for(lambda: rec.full >= 2, timeout=3)

    def test_a_failing_pass_does_not_kill_the_loop(self):
        rec = Recorder()
        calls = []

        def broken(ids):
            calls.append(ids)
            raise RuntimeError('boom')

        r = worker.Worker(broken, rec.full_pass, 3600)
        r.start()
        self.addCleanup(r.stop)
        r.mark(['a'])
        self.wait_for(lambda: calls)
        r.mark(['b'])
        self.wait_for(lambda: len(calls) == 2)

    def test_a_failed_full_pass_is_retried_soon(self):
        def failing():
            raise RuntimeError('OVSDB away')

        r = worker.Worker(Recorder().reconcile, failing, 3600)
        r.run_full_pass()
        self.assertFalse(r.stats.last_full_pass_ok)
        self.assertLessEqual(r._next_full - time.monotonic(), 5.0)

    def test_a_full_pass_failing_alike_logs_one_traceback(self):
        # OVSDB away for minutes: one traceback, then a line per retry.
        logs = self.useFixture(fixtures.FakeLogger(
            name='vifagent.reconcile.worker'))
        errors = [RuntimeError('OVSDB away')] * 3 + [RuntimeError('other')]

        def failing():
            raise errors.pop(0)

        r = worker.Worker(Recorder().reconcile, failing, 3600)
        for _ in range(4):
            r.run_full_pass()
        self.assertEqual(2, logs.output.count('Traceback'))
        self.assertEqual(4, logs.output.count('Full pass failed'))
