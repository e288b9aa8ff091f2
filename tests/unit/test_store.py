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

import json
import os
import signal
import subprocess
import sys
import uuid

import fixtures
from oslotest import base

from vifagent import binding as binding_mod
from vifagent import exception
from vifagent import store as store_mod


def make(port_id=None, network_id=None, **extra):
    data = {'port_id': port_id or str(uuid.uuid4()),
            'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': str(uuid.uuid4()),
            'network_id': network_id or str(uuid.uuid4())}
    data.update(extra)
    return binding_mod.Binding.from_dict(data)


class TestStore(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.path = self.useFixture(fixtures.TempDir()).path
        self.store = self.open()

    def open(self):
        store = store_mod.Store(self.path)
        self.addCleanup(store.close)
        return store

    def test_put_get_and_survive_reopen(self):
        b = make(mtu=1450)
        self.assertEqual((store_mod.CREATED, 1), self.store.put(b))
        self.assertEqual(b, self.store.get(b.port_id))
        self.store.close()
        again = self.open()
        self.assertEqual([b], again.all())
        self.assertEqual({b.network_id: 1}, again.vlans())

    def test_wal_and_synchronous(self):
        mode = self.store._db.execute('PRAGMA journal_mode').fetchone()[0]
        sync = self.store._db.execute('PRAGMA synchronous').fetchone()[0]
        self.assertEqual('wal', mode)
        self.assertEqual(2, sync)  # FULL

    def test_revision_rules(self):
        b = make(revision=5)
        self.store.put(b)
        same = binding_mod.Binding.from_dict(b.to_dict())
        self.assertEqual(store_mod.UNCHANGED, self.store.put(same)[0])
        equal_new = binding_mod.Binding.from_dict(dict(b.to_dict(),
                                                       mtu=9000))
        self.assertEqual(store_mod.UPDATED, self.store.put(equal_new)[0])
        older = binding_mod.Binding.from_dict(dict(b.to_dict(), revision=4,
                                                   mtu=1400))
        e = self.assertRaises(exception.StaleRevision, self.store.put, older)
        self.assertIn('older', str(e))
        self.assertEqual(9000, self.store.get(b.port_id).mtu)

    def test_one_vlan_per_network_and_reuse(self):
        net = str(uuid.uuid4())
        a, b = make(network_id=net), make(network_id=net)
        c = make()
        self.assertEqual(1, self.store.put(a)[1])
        self.assertEqual(1, self.store.put(b)[1])
        self.assertEqual(2, self.store.put(c)[1])
        self.store.delete(a.port_id)
        self.assertEqual(1, self.store.vlan_for(net))
        self.store.delete(b.port_id)
        self.assertIsNone(self.store.vlan_for(net))
        # The lowest free VLAN is reused.
        self.assertEqual(1, self.store.put(make())[1])

    def test_network_change_moves_vlan(self):
        b = make()
        self.store.put(b)
        moved = binding_mod.Binding.from_dict(dict(
            b.to_dict(), network_id=str(uuid.uuid4()), revision=1))
        self.assertEqual((store_mod.UPDATED, 1), self.store.put(moved))
        self.assertEqual({moved.network_id: 1}, self.store.vlans())

    def test_vlan_pool_exhausted(self):
        self.store.put_many([make() for _ in range(store_mod.MAX_VLAN)])
        self.assertRaises(exception.VlanPoolExhausted, self.store.put,
                          make())
        self.assertEqual(store_mod.MAX_VLAN, len(self.store.all()))

    def test_colliding_device_names_rejected(self):
        a = make(port_id='aaaaaaaa-bbbb-4ccc-8ddd-000000000001')
        b = make(port_id='aaaaaaaa-bbbb-4ccc-8ddd-000000000002')
        self.store.put(a)
        e = self.assertRaises(exception.InvalidBinding, self.store.put, b)
        self.assertEqual('port_id', e.field)
        self.assertIsNone(self.store.get(b.port_id))

    def test_one_port_per_vm_nic(self):
        vm = str(uuid.uuid4())
        a = make(instance_uuid=vm)
        b = make(instance_uuid=vm)
        self.store.put(a)
        for write in (self.store.put, lambda b: self.store.put_many([b]),
                      lambda b: self.store.replace_all([a, b])):
            e = self.assertRaises(exception.InvalidBinding, write, b)
            self.assertEqual('mac_address', e.field)
            self.assertIn("NIC %s is bound as port" % a.mac_address, str(e))
            self.assertIsNone(self.store.get(b.port_id))
            self.assertEqual(a, self.store.get(a.port_id))
        # Another NIC of the same VM is fine.
        self.store.put(make(instance_uuid=vm, mac_address='fa:16:3e:00:00:02'))

    def test_a_nic_may_move_between_ports_in_one_sync(self):
        vm = str(uuid.uuid4())
        a = make(instance_uuid=vm)
        b = make(instance_uuid=vm, mac_address='fa:16:3e:00:00:02')
        self.store.replace_all([a, b])
        # The two ports swap NICs: only the final state counts.
        swapped = [binding_mod.Binding.from_dict(dict(
            x.to_dict(), mac_address=y.mac_address, revision=1))
            for x, y in ((a, b), (b, a))]
        self.store.replace_all(swapped)
        self.assertEqual(b.mac_address, self.store.get(a.port_id).mac_address)
        # And a NIC moves from a removed port (a, now on b's old MAC) to a
        # new one.
        c = make(instance_uuid=vm, mac_address=b.mac_address)
        self.store.replace_all([swapped[1], c])
        self.assertIsNone(self.store.get(a.port_id))

    def test_put_many_is_atomic(self):
        good = make()
        stale = make(revision=3)
        self.store.put(stale)
        older = binding_mod.Binding.from_dict(dict(stale.to_dict(),
                                                   revision=1))
        self.assertRaises(exception.StaleRevision, self.store.put_many,
                          [good, older])
        self.assertIsNone(self.store.get(good.port_id))

    def test_delete_unknown_is_none(self):
        self.assertIsNone(self.store.delete(str(uuid.uuid4())))

    def test_acknowledged_put_survives_kill_9(self):
        b = make(mtu=1400)
        script = (
            'import json, sys, time\n'
            'from vifagent import binding, store\n'
            's = store.Store(sys.argv[1])\n'
            's.put(binding.Binding.from_dict(json.loads(sys.argv[2])))\n'
            'print("stored", flush=True)\n'
            'time.sleep(60)\n')
        child = subprocess.Popen(
            [sys.executable, '-c', script, self.path,
             json.dumps(b.to_dict())], stdout=subprocess.PIPE, text=True)
        self.addCleanup(child.kill)
        self.assertEqual('stored', child.stdout.readline().strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        self.assertEqual(b, self.open().get(b.port_id))

    def test_unbind_leaves_a_tombstone_until_forgotten(self):
        b = make()
        self.store.put(b)
        self.assertEqual(b, self.store.delete(b.port_id))
        self.assertEqual([b.port_id], self.store.unbinding())
        self.assertEqual([b.port_id], self.open().unbinding())
        self.store.forget([b.port_id])
        self.assertEqual([], self.store.unbinding())

    def test_binding_again_clears_the_tombstone(self):
        b = make()
        self.store.put(b)
        self.store.delete(b.port_id)
        self.store.put(b)
        self.assertEqual([], self.store.unbinding())

    def test_sync_removal_leaves_tombstones(self):
        a, b = make(), make()
        self.store.put_many([a, b])
        _, removed = self.store.replace_all([b])
        self.assertEqual([a], removed)
        self.assertEqual([a.port_id], self.store.unbinding())

    def test_reported_statuses_survive_and_go_with_the_binding(self):
        b = make()
        self.store.put(b)
        self.store.set_reported({b.port_id: ('ERROR', 'boom')})
        self.assertEqual({b.port_id: ('ERROR', 'boom')},
                         self.open().reported())
        self.store.delete(b.port_id)
        self.assertEqual({}, self.store.reported())


class TestQuarantine(base.BaseTestCase):
    """A stored row that today's rules refuse blocks nothing."""

    def setUp(self):
        super().setUp()
        self.store = store_mod.Store(self.useFixture(fixtures.TempDir()).path)
        self.addCleanup(self.store.close)
        self.good, self.bad = make(), make(revision=3)
        self.store.put(self.good)
        self.store.put(self.bad)
        # As if an upgrade tightened a rule: the row no longer validates.
        data = dict(self.bad.to_dict(), mtu=10)
        self.store._db.execute('UPDATE bindings SET data = ? '
                               'WHERE port_id = ?',
                               (json.dumps(data), self.bad.port_id))

    def test_kept_apart_not_lost(self):
        bindings, quarantined = self.store.load()
        self.assertEqual([self.good], bindings)
        self.assertEqual([self.bad.port_id],
                         [q.port_id for q in quarantined])
        self.assertIn('mtu', quarantined[0].reason)
        self.assertEqual(3, quarantined[0].revision)
        self.assertEqual([self.good], self.store.all())
        self.assertIsInstance(self.store.get(self.bad.port_id),
                              store_mod.Quarantined)

    def test_replaced_by_a_valid_binding_or_removed(self):
        self.assertRaises(exception.StaleRevision, self.store.put,
                          make(port_id=self.bad.port_id, revision=2))
        fixed = make(port_id=self.bad.port_id, revision=4)
        self.assertEqual(store_mod.UPDATED, self.store.put(fixed)[0])
        self.assertEqual([], self.store.load()[1])
        self.store._db.execute('UPDATE bindings SET data = ? '
                               'WHERE port_id = ?',
                               (json.dumps({'port_id': fixed.port_id}),
                                fixed.port_id))
        _, removed = self.store.replace_all([self.good])
        self.assertEqual([fixed.port_id], [r.port_id for r in removed])
        self.assertEqual(([self.good], []), self.store.load())


class TestUnavailable(base.BaseTestCase):
    """A store the disk refuses fails typed and leaves no trace."""

    def setUp(self):
        super().setUp()
        self.path = self.useFixture(fixtures.TempDir()).path
        self.store = store_mod.Store(self.path)
        self.addCleanup(self.store.close)

    def fill(self):
        """SQLite's own full-disk error: no page may be added."""
        pages = self.store._db.execute('PRAGMA page_count').fetchone()[0]
        self.store._db.execute('PRAGMA max_page_count=%d' % pages)

    def test_full_disk_is_typed_and_writes_nothing(self):
        kept = make()
        self.store.put(kept)
        self.fill()
        many = [make() for _ in range(200)]
        e = self.assertRaises(exception.StoreUnavailable,
                              self.store.put_many, many)
        self.assertIn('full', str(e))
        self.assertRaises(exception.StoreUnavailable,
                          self.store.replace_all, many)
        self.assertEqual([kept], self.store.all())
        self.assertEqual(['ok'], self.store.integrity_check())
        # Room again: the same write goes through.
        self.store._db.execute('PRAGMA max_page_count=1073741823')
        self.store.put_many(many)
        self.assertEqual(201, len(self.store.all()))

    def test_reads_serve_while_writes_fail(self):
        b = make()
        self.store.put(b)
        self.fill()
        self.assertRaises(exception.StoreUnavailable, self.store.put_many,
                          [make() for _ in range(200)])
        self.assertEqual(b, self.store.get(b.port_id))
        self.assertEqual({b.network_id: 1}, self.store.vlans())


class TestDamaged(base.BaseTestCase):
    """A damaged store file is refused, never replaced by an empty one."""

    def setUp(self):
        super().setUp()
        self.path = self.useFixture(fixtures.TempDir()).path
        self.file = os.path.join(self.path, store_mod.DB_NAME)

    def test_not_a_database(self):
        with open(self.file, 'wb') as f:
            f.write(os.urandom(8192))
        e = self.assertRaises(exception.StoreUnavailable, store_mod.Store,
                              self.path)
        self.assertIn(self.file, str(e))
        with open(self.file, 'rb') as f:
            self.assertEqual(8192, len(f.read()))  # left for the operator

    def test_damaged_pages(self):
        store = store_mod.Store(self.path)
        store.put_many([make() for _ in range(300)])
        store._db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        store.close()
        size = os.path.getsize(self.file)
        self.assertGreater(size, 8 * 4096)
        with open(self.file, 'r+b') as f:
            # Keep the header (page 1), damage the tables and indexes.
            f.seek(4096)
            f.write(b'\xff' * (size - 2 * 4096))
        e = self.assertRaises(exception.StoreUnavailable, store_mod.Store,
                              self.path)
        self.assertIn('damaged', str(e))

    def test_sound_store_opens(self):
        store = store_mod.Store(self.path)
        b = make()
        store.put(b)
        store.close()
        store = store_mod.Store(self.path)
        self.addCleanup(store.close)
        self.assertEqual([b], store.all())
        self.assertEqual(['ok'], store.integrity_check())
