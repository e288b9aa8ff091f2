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

"""The reporter over oslo.messaging's fake driver: sent, retried, latest."""

import threading
import time

from tests.unit.rpc import test_server
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.rpc import client as client_mod
from vifagent.rpc import reporter as reporter_mod

binding = test_server.binding


class TestReporter(test_server.Base):

    def listen(self):
        received = {'status': [], 'state': []}
        listener = client_mod.get_report_listener(
            self.transport, self.conf.agent.report_topic, 'watch',
            received['status'].extend, received['state'].append)
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)
        return received

    def break_casts(self, reporter):
        """Casts fail while the returned event is set (it is, at first)."""
        cast = reporter._client.cast
        broken = threading.Event()
        broken.set()

        def flaky(*args, **kwargs):
            if broken.is_set():
                raise exception.VifAgentException('broker away')
            return cast(*args, **kwargs)
        self.patch(reporter._client, 'cast', flaky)
        return broken

    def reporter(self, state_fn=dict):
        self.conf.set_override('report_interval', 1, 'agent')
        self.conf.set_override('report_retry_cap', 0.2, 'agent')
        reporter = reporter_mod.Reporter(self.transport, self.conf,
                                         self.rec.status, state_fn)
        reporter.start()
        self.addCleanup(reporter.stop)
        return reporter

    def wait_for(self, predicate, timeout=5):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def test_status_changes_and_heartbeats_are_sent(self):
        received = self.listen()
        self.reporter(lambda: {'beat': True})
        data = binding()
        self.rec.bind(self.rec_binding(data))
        self.wait_for(lambda: received['status'])
        self.assertEqual([{'port_id': data['port_id'], 'status': 'ACTIVE',
                           'reason': None, 'host': self.conf.host}],
                         received['status'])
        self.assertEqual({}, self.rec.status.pending())
        self.wait_for(lambda: received['state'], timeout=3)
        self.assertEqual({'beat': True}, received['state'][0])

    def test_a_failed_cast_is_retried_with_the_latest_status(self):
        received = self.listen()
        reporter = self.reporter()
        broken = self.break_casts(reporter)
        data = binding()
        self.rec.bind(self.rec_binding(data))
        self.wait_for(lambda: reporter.up is False)
        self.rec.engine.ovs.fail = 'away'
        self.rec.bind(self.rec_binding(dict(data, admin_state_up=False,
                                            revision=1)))
        self.assertEqual([], received['status'])
        broken.clear()
        self.wait_for(lambda: received['status'])
        self.assertEqual(['ERROR'], [s['status'] for s in received['status']])
        self.wait_for(lambda: reporter.up)

    def outage_then_late_listener(self, window):
        """A status made during an outage; a listener subscribed after."""
        self.conf.set_override('report_replay_window', window, 'agent')
        reporter = self.reporter(lambda: {'beat': True})
        broken = self.break_casts(reporter)
        data = binding()
        self.rec.bind(self.rec_binding(data))
        self.wait_for(lambda: reporter.up is False)
        broken.clear()
        # Sent, to nobody: a restarted broker has no listener's queue yet.
        self.wait_for(lambda: reporter.up and not self.rec.status.pending())
        return reporter, data, self.listen()

    def test_outage_statuses_are_replayed_before_heartbeats(self):
        reporter, data, received = self.outage_then_late_listener(60)
        self.wait_for(lambda: received['state'], timeout=3)
        self.assertEqual([(data['port_id'], 'ACTIVE')],
                         [(s['port_id'], s['status'])
                          for s in received['status']][:1])
        self.assertGreaterEqual(reporter.replayed, 1)

    def test_no_replay_when_the_window_is_zero(self):
        reporter, _, received = self.outage_then_late_listener(0)
        self.wait_for(lambda: len(received['state']) >= 2, timeout=4)
        self.assertEqual([], received['status'])
        self.assertEqual(0, reporter.replayed)

    def test_replay_ends_with_its_window(self):
        reporter, _, received = self.outage_then_late_listener(1)
        time.sleep(1.5)
        replayed = reporter.replayed
        count = len(received['status'])
        self.wait_for(lambda: len(received['state']) >= 3, timeout=5)
        self.assertEqual((replayed, count),
                         (reporter.replayed, len(received['status'])))

    def test_stop_is_prompt_while_the_broker_is_away(self):
        reporter = self.reporter()
        self.patch(reporter._client, 'cast', self.fail_cast)
        self.rec.bind(self.rec_binding(binding()))
        self.wait_for(lambda: reporter.up is False)
        started = time.monotonic()
        reporter.stop()
        self.assertLess(time.monotonic() - started, 1)
        self.assertEqual(1, len(self.rec.status.pending()))

    @staticmethod
    def fail_cast(*args, **kwargs):
        raise exception.VifAgentException('broker away')

    @staticmethod
    def rec_binding(data):
        return binding_mod.Binding.from_dict(data)
