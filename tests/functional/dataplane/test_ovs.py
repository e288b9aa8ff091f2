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

"""OvsDataplane.observe against the host's real Open vSwitch."""

import collections
from unittest import mock
import uuid

from ovs.db import idl as ovs_idl

from tests.functional import base
from tests.functional import tls

FOREIGN_BRIDGES = 3
PORTS_EACH = 4


class TestObserve(base.FunctionalTestCase):

    def _foreign_bridges(self):
        """Bridges of another agent, each with qvo-named ports: {port: br}."""
        where = {}
        for _ in range(FOREIGN_BRIDGES):
            bridge = 'br-%s' % uuid.uuid4().hex[:8]
            self.addCleanup(base.run, ['ovs-vsctl', '--if-exists', 'del-br',
                                       bridge], False)
            cmd = ['ovs-vsctl', 'add-br', bridge, '--', 'set', 'bridge',
                   bridge, 'datapath_type=netdev']
            for _ in range(PORTS_EACH):
                name = 'qvo%s' % uuid.uuid4().hex[:11]
                cmd += ['--', 'add-port', bridge, name]
                where[name] = bridge
            base.run(cmd)
        return where

    def test_foreign_ports_are_placed_reading_each_bridge_once(self):
        """A full observe reads each bridge's port list once, not per port.

        On a host (or a benchmark) with many bridges full of qvo ports,
        looking each foreign port's bridge up by scanning every bridge cost
        seconds per pass, with the OVSDB connection's lock held.
        """
        ovs = self.engine.ovs
        where = self._foreign_bridges()
        tls.wait_for(lambda: set(where) <= set(ovs.observe()), 10,
                     'the foreign ports in the IDL')

        reads = collections.Counter()
        getattr_ = ovs_idl.Row.__getattr__

        def spy(row, column):
            if column == 'ports' and row._table.name == 'Bridge':
                reads[row.uuid] += 1
            return getattr_(row, column)

        with mock.patch.object(ovs_idl.Row, '__getattr__', spy):
            seen = ovs.observe()

        self.assertEqual(where, {name: seen[name].bridge for name in where})
        self.assertEqual([], [u for u, n in reads.items() if n > 1])
