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

import errno
import subprocess
import threading
import time
import uuid

from oslotest import base as oslo_base

from tests.functional import base
from vifagent.kernel import rtnl


class TestLinkReader(oslo_base.BaseTestCase):
    """The lean reader agrees with iproute2 on every field it decodes."""

    def setUp(self):
        super().setUp()
        self.reader = rtnl.LinkReader()
        self.addCleanup(self.reader.close)
        suffix = uuid.uuid4().hex[:8]
        self.br, self.a, self.b = ('qbrt' + suffix, 'qvbt' + suffix,
                                   'qvot' + suffix)
        self.ns = 'vifagent-test-' + suffix
        base.run(['ip', 'link', 'add', self.br, 'type', 'bridge',
                  'stp_state', '1', 'forward_delay', '700',
                  'mcast_snooping', '0'])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.br], False)
        base.run(['ip', 'link', 'add', self.a, 'mtu', '1400', 'type',
                  'veth', 'peer', 'name', self.b])
        self.addCleanup(base.run, ['ip', 'link', 'del', self.a], False)
        base.run(['ip', 'link', 'set', self.a, 'master', self.br, 'alias',
                  'vifagent:x', 'group', '77', 'up'])

    def test_fields_match_iproute2(self):
        for name in (self.br, self.a, self.b):
            fields = self.reader.get(name)
            ip = base.link_json(name)
            self.assertEqual(ip['ifindex'], fields.index)
            self.assertEqual(ip['mtu'], fields.mtu)
            self.assertEqual('UP' in ip['flags'], fields.up)
            self.assertEqual('LOWER_UP' in ip['flags'], fields.carrier)
            self.assertEqual(ip.get('ifalias'), fields.alias)
            self.assertEqual(ip['linkinfo']['info_kind'], fields.kind)
            with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % name) as f:
                self.assertEqual(f.read().strip() == '1',
                                 fields.ipv6_disabled)
        bridge = self.reader.get(self.br)
        self.assertEqual((1, 700, 0), (bridge.stp,
                                       bridge.forward_delay,
                                       bridge.mcast_snooping))
        a, b = self.reader.get(self.a), self.reader.get(self.b)
        self.assertEqual(bridge.index, a.master)
        self.assertEqual((b.index, a.index), (a.peer, b.peer))
        self.assertEqual(77, a.group)
        self.assertIsNone(a.peer_netnsid)

    def test_ipv6_disabled_is_read(self):
        self.assertFalse(self.reader.get(self.br).ipv6_disabled)
        with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % self.br,
                  'w') as f:
            f.write('1')
        self.assertTrue(self.reader.get(self.br).ipv6_disabled)

    def test_netns_peer(self):
        base.run(['ip', 'netns', 'add', self.ns])
        self.addCleanup(base.run, ['ip', 'netns', 'del', self.ns], False)
        base.run(['ip', 'link', 'set', self.b, 'netns', self.ns])
        a = self.reader.get(self.a)
        self.assertIsNotNone(a.peer_netnsid)

    def test_missing_is_none(self):
        self.assertIsNone(self.reader.get('qbr' + uuid.uuid4().hex[:11]))

    def test_dump_filters_by_name(self):
        wanted = {self.br, self.b}
        names = {f.name for f in self.reader.dump(wanted.__contains__)}
        self.assertEqual(wanted, names)
        self.assertIn('lo', {f.name for f in self.reader.dump()})


class TestLinkMonitor(oslo_base.BaseTestCase):
    """The monitor hears link events, and outlives a broken socket."""

    def setUp(self):
        super().setUp()
        self.names = []
        self.overflows = []
        self.prefix = 'vfm' + uuid.uuid4().hex[:8]

    def monitor(self, monitor_class=rtnl.LinkMonitor, **kwargs):
        monitor = monitor_class(self.names.extend,
                                lambda: self.overflows.append(1), **kwargs)
        monitor.start()
        self.addCleanup(monitor.stop)
        return monitor

    def device(self, n):
        """A new device (a bridge: this kernel may have no dummy)."""
        name = '%s%d' % (self.prefix, n)
        base.run(['ip', 'link', 'add', name, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', name], False)
        return name

    def burst(self, count=200):
        """``count`` link notifications at once: alias changes of one."""
        name = self.device(9)
        subprocess.run(['ip', '-batch', '-'], check=True, text=True,
                       input=''.join('link set %s alias burst-%d\n' % (
                           name, n) for n in range(count)))

    def wait(self, predicate, what, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.02)

    def test_survives_its_socket_failing(self):
        monitor = self.monitor()
        self.wait(monitor.healthy, 'monitor not up')
        # The socket goes bad under the thread: recv fails with EBADF.
        monitor._sock.close()
        self.wait(lambda: self.overflows, 'no full pass asked for')
        self.wait(monitor.healthy, 'monitor not up again')
        self.assertEqual(1, monitor.restarts)
        name = self.device(1)
        self.wait(lambda: name in self.names, 'no event after the restart')

    def test_unhealthy_while_it_cannot_reopen(self):
        opened = []
        allowed = threading.Event()

        class Flaky(rtnl.LinkMonitor):
            def _open(self):
                if opened and not allowed.is_set():
                    raise OSError(errno.ENOMEM, 'no memory for a socket')
                opened.append(1)
                return super()._open()

        monitor = self.monitor(Flaky)
        monitor._sock.close()
        self.wait(lambda: not monitor.healthy(), 'still healthy')
        self.assertEqual([], self.overflows)
        allowed.set()
        self.wait(monitor.healthy, 'monitor not up again', timeout=30)
        self.wait(lambda: self.overflows, 'no full pass asked for')
        name = self.device(2)
        self.wait(lambda: name in self.names, 'no event after the restart')
