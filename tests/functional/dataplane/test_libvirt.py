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

"""The libvirt watcher against a real libvirtd and real domains.

The watcher's cache must follow each domain's life through events alone,
and after a lost connection it must reconnect and catch up on what it
missed. The connection is cut with a proxy in front of libvirtd's socket,
so the shared libvirtd and other tests are not disturbed.
"""

import os
import queue
import time

import fixtures
from oslotest import base as test_base

from tests.functional import base
from tests.functional import libvirt_fixture
from tests.functional import proxy as proxy_mod
from vifagent.dataplane import libvirt as libvirt_dp

LIBVIRT_SOCKET = '/var/run/libvirt/libvirt-sock'


class WatcherTestCase(test_base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(libvirt_fixture.LibvirtInUse())
        self.changes = queue.Queue()
        self.connects = queue.Queue()

    def _watcher(self, uri='qemu:///system', reload_interval=60):
        watcher = libvirt_dp.Watcher(
            uri, self.changes.put, lambda: self.connects.put(True),
            backoff_cap=1.0, reload_interval=reload_interval)
        watcher.start()
        self.addCleanup(watcher.stop)
        return watcher

    def _wait(self, watcher, uuid, mac, predicate, what, timeout=30):
        """Wait until resolve() satisfies predicate; return the Tap."""
        deadline = time.monotonic() + timeout
        while True:
            tap = watcher.resolve(uuid, mac)
            if predicate(tap):
                return tap
            if time.monotonic() > deadline:
                self.fail('%s: still %s' % (what, tap))
            time.sleep(0.05)

    def _changed(self, uuid, timeout=30):
        """Wait until on_change reports ``uuid``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if uuid in self.changes.get(timeout=0.5):
                    return
            except queue.Empty:
                pass
        self.fail('no change reported for %s' % uuid)

    def test_follows_the_life_of_a_domain(self):
        watcher = self._watcher()
        self.assertTrue(watcher.connected())
        mac = base.random_mac()
        dom = self.useFixture(libvirt_fixture.DomainFixture(
            [{'mac': mac, 'type': 'ethernet'}], start=False))
        self._changed(dom.uuid)
        self.assertEqual('domain is shut off',
                         watcher.resolve(dom.uuid, mac).down)

        dom.start()
        self._changed(dom.uuid)
        tap = watcher.resolve(dom.uuid, mac)
        self.assertIsNone(tap.down)
        self.assertEqual(dom.taps()[mac], tap.device)
        self.assertIsNotNone(base.link_json(tap.device))
        self.assertIsNone(tap.bridge)
        # Only the guest MAC matches, never the tap's own (0xfe...) one.
        tap_mac = base.link_json(tap.device)['address']
        self.assertTrue(tap_mac.startswith('fe:'))
        self.assertEqual('domain has no interface with MAC %s' % tap_mac,
                         watcher.resolve(dom.uuid, tap_mac).down)

        dom.destroy()
        self._changed(dom.uuid)
        self.assertEqual(libvirt_dp.Tap(down='domain is shut off'),
                         watcher.resolve(dom.uuid, mac))

        dom.undefine()
        self._changed(dom.uuid)
        self.assertEqual('domain is not defined',
                         watcher.resolve(dom.uuid, mac).down)

    def test_periodic_reload_heals_the_cache(self):
        mac = base.random_mac()
        dom = self.useFixture(libvirt_fixture.DomainFixture(
            [{'mac': mac, 'type': 'ethernet'}]))
        watcher = self._watcher(reload_interval=0.5)
        self.assertIsNotNone(watcher.resolve(dom.uuid, mac).device)
        # A cache gone wrong with no event to say so...
        watcher._domains.pop(dom.uuid)
        # ...is put right by the next reload, which reports the change.
        self._changed(dom.uuid, timeout=5)
        self.assertIsNotNone(watcher.resolve(dom.uuid, mac).device)

    def test_hot_plug_and_unplug(self):
        watcher = self._watcher()
        mac, extra = base.random_mac(), base.random_mac()
        # A guest OS, as only a guest acknowledges a hot-unplug.
        dom = self.useFixture(libvirt_fixture.DomainFixture(
            [{'mac': mac, 'type': 'ethernet'}], guest={}))
        self._wait(watcher, dom.uuid, mac, lambda t: t.device, 'start')

        dom.attach_interface({'mac': extra, 'type': 'ethernet'})
        tap = self._wait(watcher, dom.uuid, extra, lambda t: t.device,
                         'hot plug')
        self.assertEqual(dom.taps()[extra], tap.device)

        dom.detach_interface(extra)
        self._wait(watcher, dom.uuid, extra,
                   lambda t: t.down and 'no interface' in t.down,
                   'hot unplug')
        self.assertIsNotNone(watcher.resolve(dom.uuid, mac).device)

    def test_bridge_interface_names_its_bridge(self):
        watcher = self._watcher()
        bridge = 'qbr' + os.urandom(5).hex()[:11]
        base.run(['ip', 'link', 'add', bridge, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', bridge], False)
        base.run(['ip', 'link', 'set', bridge, 'up'])
        mac = base.random_mac()
        dom = self.useFixture(libvirt_fixture.DomainFixture(
            [{'mac': mac, 'type': 'bridge', 'bridge': bridge}]))
        tap = self._wait(watcher, dom.uuid, mac, lambda t: t.device, 'start')
        self.assertEqual(bridge, tap.bridge)
        master = base.link_json(tap.device).get('master')
        self.assertEqual(bridge, master)

    def test_reconnects_and_catches_up(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'libvirt-sock')
        proxy = proxy_mod.SocketProxy(LIBVIRT_SOCKET, path)
        self.addCleanup(proxy.cut)
        watcher = self._watcher('qemu:///system?socket=' + proxy.path)
        self.assertTrue(watcher.connected())
        mac = base.random_mac()
        dom = self.useFixture(libvirt_fixture.DomainFixture(
            [{'mac': mac, 'type': 'ethernet'}]))
        self._wait(watcher, dom.uuid, mac, lambda t: t.device, 'start')

        proxy.cut()
        deadline = time.monotonic() + 20
        while watcher.connected():
            self.assertLess(time.monotonic(), deadline,
                            'connection loss not noticed')
            time.sleep(0.05)
        # The cache is kept while libvirtd is away: its VMs still run.
        self.assertIsNotNone(watcher.resolve(dom.uuid, mac).device)
        # A change no event can deliver now.
        dom.destroy()
        time.sleep(1)
        self.assertIsNotNone(watcher.resolve(dom.uuid, mac).device)

        connects = watcher.connects
        proxy.restore()
        self.assertTrue(self.connects.get(timeout=10))
        self.assertEqual(connects + 1, watcher.connects)
        self.assertTrue(watcher.connected())
        self.assertEqual('domain is shut off',
                         watcher.resolve(dom.uuid, mac).down)
