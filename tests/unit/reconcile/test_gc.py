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

"""Garbage collection's memory of what it saw, pass after pass."""

import uuid

import fixtures
from oslotest import base

from vifagent import binding as binding_mod
from vifagent.reconcile import gc
from vifagent import state


def foreign_names():
    """Device names of a port nobody bound here (another agent's)."""
    return list(binding_mod.device_names(str(uuid.uuid4())).all())


class TestForeignDevices(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.collector = gc.Collector('compute-1', grace=60)
        self.log = self.useFixture(fixtures.FakeLogger(name=gc.__name__))

    def pass_over(self, names):
        observed = state.Observed(links=dict.fromkeys(names))
        self.assertEqual([], self.collector.due(observed, [], []))

    def test_each_foreign_device_is_logged_once_while_it_exists(self):
        names = foreign_names()
        self.pass_over(names)
        self.pass_over(names)
        for name in names:
            self.assertEqual(1, self.log.output.count('Device %s ' % name))

    def test_memory_is_bounded_by_what_exists(self):
        # Another agent's VMs come and go: the collector must not keep
        # every name it ever saw.
        for _ in range(50):
            names = foreign_names()
            self.pass_over(names)
        self.assertLessEqual(len(self.collector._foreign_reported),
                             len(names))

    def test_a_device_that_comes_back_is_logged_again(self):
        names = foreign_names()
        self.pass_over(names)
        self.pass_over([])
        self.pass_over(names)
        self.assertEqual(2, self.log.output.count('Device %s ' % names[0]))
