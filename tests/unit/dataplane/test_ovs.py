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

"""OvsDataplane without a server: batches, timeouts, OVSDB away at start.

The functional tests (tests/functional/cmd/test_ovs_outage.py and
test_ovs_load.py) run the same code on a real Open vSwitch.
"""

import contextlib
import os
import time

import fixtures
from oslotest import base

from vifagent.dataplane import ovs
from vifagent import exception
from vifagent import state


class _Txn:
    def __init__(self, log, timeout):
        self.log = log
        self.timeout = timeout

    def add(self, cmd):
        self.log.append({'adds': [s.name for s in cmd.adds],
                         'updates': [s.name for s in cmd.updates],
                         'deletes': list(cmd.deletes),
                         'timeout': self.timeout})


class _Api:
    """Records each transaction; fails the ``fail_at``-th one."""

    def __init__(self, fail_at=None):
        self.log = []
        self.fail_at = fail_at

    @contextlib.contextmanager
    def transaction(self, check_error=False, timeout=None):
        self.assert_check = check_error
        yield _Txn(self.log, timeout)
        if len(self.log) == self.fail_at:
            raise RuntimeError('OVSDB Error: boom')


def specs(prefix, count):
    return [state.OvsPortSpec('p%d' % i, '%s%d' % (prefix, i), tag=5)
            for i in range(count)]


class TestBatches(base.BaseTestCase):

    def dataplane(self, api, **kwargs):
        dp = ovs.OvsDataplane('unix:/nowhere', 'br-int', timeout=10,
                              **kwargs)
        dp.api = api
        return dp

    def test_a_big_batch_is_split_and_each_part_given_time(self):
        api = _Api()
        dp = self.dataplane(api, timeout_per_port=0.1, max_ports=100)
        made = dp.apply(specs('a', 230), specs('u', 5),
                        ['d%d' % i for i in range(10)])
        self.assertEqual(3, made)
        self.assertEqual([100, 100, 45],
                         [len(t['adds']) + len(t['updates']) +
                          len(t['deletes']) for t in api.log])
        # Deletions first, updates last, nothing lost or repeated.
        self.assertEqual(10, len(api.log[0]['deletes']))
        self.assertEqual(5, len(api.log[2]['updates']))
        self.assertEqual(230, len({n for t in api.log for n in t['adds']}))
        self.assertEqual([20.0, 20.0, 14.5],
                         [round(t['timeout'], 3) for t in api.log])
        self.assertTrue(api.assert_check)

    def test_a_small_batch_is_one_transaction(self):
        api = _Api()
        dp = self.dataplane(api, timeout_per_port=0.5, max_ports=100)
        self.assertEqual(1, dp.apply(specs('a', 3), [], []))
        self.assertEqual(11.5, api.log[0]['timeout'])
        self.assertEqual(0, dp.apply([], [], []))
        self.assertEqual(1, len(api.log))

    def test_a_failed_part_raises_and_stops_the_batch(self):
        api = _Api(fail_at=2)
        dp = self.dataplane(api, max_ports=10)
        self.assertRaisesRegex(exception.OvsdbError, 'boom', dp.apply,
                               specs('a', 35), [], [])
        self.assertEqual(2, len(api.log))


class TestUnreachableAtStart(base.BaseTestCase):

    def test_start_without_wait_keeps_trying_in_the_background(self):
        sock = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'db.sock')
        dp = ovs.OvsDataplane('unix:' + sock, 'br-int', timeout=1)
        dp.start(ensure_bridge=False, wait=False)
        self.addCleanup(dp.stop)
        self.assertFalse(dp.connected())
        for call in (lambda: dp.observe(None), dp.tags_in_use,
                     dp.ensure_bridge, dp.bridge_external_ids,
                     lambda: dp.apply(specs('a', 1), [], [])):
            self.assertRaisesRegex(exception.OvsdbError,
                                   'not connected to OVSDB', call)
        started = time.monotonic()
        dp.stop()
        self.assertLess(time.monotonic() - started, 5)


class TestBoundedTransaction(base.BaseTestCase):

    def test_time_remaining_never_means_no_timeout(self):
        # ovsdbapp waits without limit for a remaining time of 0 or less.
        txn = ovs._Transaction(None, None, timeout=3, check_error=True)
        txn.start_time = time.time() - 10
        self.assertEqual(ovs._LAST_WAIT, txn.time_remaining())
        txn.start_time = time.time()
        self.assertGreater(txn.time_remaining(), 2)


class TestErrorsStaySmall(base.BaseTestCase):

    def test_a_command_names_its_size_not_its_ports(self):
        cmd = ovs._ApplyPorts(None, 'br-int', specs('a', 500), specs('u', 2),
                              ['d'])
        self.assertEqual('_ApplyPorts(bridge=br-int, 500 adds, 2 updates, '
                         '1 deletes)', str(cmd))
        self.assertEqual(str(cmd), repr([cmd])[1:-1])

    def test_a_timeout_without_its_arguments_still_has_a_reason(self):
        from ovsdbapp import exceptions as ovsdbapp_exc
        error = ovsdbapp_exc.TimeoutException()
        self.assertEqual('TimeoutException: OVSDB transaction timed out',
                         ovs._reason(error))
        self.assertEqual('boom', ovs._reason(RuntimeError('boom')))
