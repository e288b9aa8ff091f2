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

"""The reconciler over a host in memory: life of a port, reads, statuses."""

import json
import threading
import time
import uuid

import fixtures
from oslotest import base

from tests.unit import fakes
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent import ops
from vifagent.reconcile import reconciler as reconciler_mod
from vifagent import state
from vifagent import store as store_mod


def make(port_id=None, **extra):
    data = {'port_id': port_id or str(uuid.uuid4()),
            'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': str(uuid.uuid4()),
            'network_id': str(uuid.uuid4()), 'mtu': 1450,
            'vif_type': 'netns', 'netns': 'vm-' + uuid.uuid4().hex[:6]}
    data.update(extra)
    return binding_mod.Binding.from_dict(data)


class Base(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.path = self.useFixture(fixtures.TempDir()).path
        self.host = fakes.FakeHost()
        self.rec = self.open()

    def open(self, **kwargs):
        store = store_mod.Store(self.path)
        self.addCleanup(store.close)
        kwargs.setdefault('resync_interval', 3600)
        kwargs.setdefault('netns_allowed', ['vm-*'])
        rec = reconciler_mod.Reconciler(store, fakes.engine(self.host),
                                        fakes.OWNER, **kwargs)
        self.addCleanup(rec.stop)
        return rec

    def hold_ovs(self):
        """Make the next OVS transaction wait until the cleanup."""
        ovs = self.rec.engine.ovs
        ovs.hold.clear()
        ovs.entered.clear()
        self.addCleanup(ovs.hold.set)
        return ovs


class TestLife(Base):

    def test_bind_builds_the_chain_and_replies_active(self):
        b = make()
        reply = self.rec.bind(b)
        self.assertEqual(state.ACTIVE, reply['status'])
        self.assertEqual(1, reply['vlan'])
        self.assertEqual(b.devices.qvo, reply['devices']['qvo'])
        self.assertEqual(b.devices.tap, reply['devices']['tap'])
        self.assertIn(b.devices.qbr, self.host.links)
        self.assertEqual(1, self.host.ovs_ports[b.devices.qvo].tag)
        self.assertEqual(b, self.rec.store.get(b.port_id))

    def test_unbind_removes_what_it_owns_and_is_idempotent(self):
        b = make()
        self.rec.bind(b)
        reply = self.rec.unbind(b.port_id)
        self.assertTrue(reply['was_bound'])
        self.assertIsNone(reply['left_behind'])
        self.assertEqual({}, self.host.ovs_ports)
        self.assertFalse(set(b.devices.all()) & set(self.host.links))
        self.assertFalse(self.rec.unbind(b.port_id)['was_bound'])
        self.assertRaises(exception.PortNotFound, self.rec.get, b.port_id)

    def test_sync_adds_updates_and_removes(self):
        keep, drop, new = make(), make(), make()
        self.rec.bind(keep)
        self.rec.bind(drop)
        changed = binding_mod.Binding.from_dict(
            dict(keep.to_dict(), mtu=1400, revision=1))
        reply = self.rec.sync([changed, new])
        self.assertEqual([new.port_id], reply['added'])
        self.assertEqual([keep.port_id], reply['updated'])
        self.assertEqual([drop.port_id], reply['removed'])
        self.assertEqual(1400, self.host.links[keep.devices.qvo].mtu)
        self.assertNotIn(drop.devices.qvo, self.host.ovs_ports)

    def test_network_update_changes_every_port_of_the_network(self):
        a = make()
        b = make(network_id=a.network_id)
        other = make()
        for x in (a, b, other):
            self.rec.bind(x)
        self.rec.network_update(a.network_id, 9000)
        self.assertEqual([9000, 9000, 1450],
                         [self.host.links[x.devices.qvb].mtu
                          for x in (a, b, other)])

    def test_a_vlan_a_stale_port_carries_is_not_given_away(self):
        old = make()
        self.assertEqual(1, self.rec.bind(old)['vlan'])
        # OVSDB fails the removal: the old qvo keeps tag 1.
        self.rec.engine.ovs.fail = 'OVSDB is away'
        self.assertIsNotNone(self.rec.unbind(old.port_id)['left_behind'])
        self.assertEqual(1, self.host.ovs_ports[old.devices.qvo].tag)
        self.rec.engine.ovs.fail = None
        new = make()
        self.assertEqual(2, self.rec.bind(new)['vlan'])
        self.assertEqual(3, self.rec.sync([new, make()])['ports'][1]['vlan'])

    def test_isolated_until_the_linux_side_is_seen_whole(self):
        # The kernel "accepts" qvb's enslavement but it does not stick.
        self.rec.engine.linux.drop = {ops.Op.SET_MASTER}
        b = make()
        reply = self.rec.bind(b)
        self.assertEqual(state.PENDING, reply['status'])
        self.assertIn('on VLAN 4095 until its Linux side is complete',
                      reply['reason'])
        self.assertEqual(binding_mod.DEAD_VLAN,
                         self.host.ovs_ports[b.devices.qvo].tag)
        self.assertIn(b.port_id, self.rec.worker._dirty)  # tried again
        self.rec.engine.linux.drop = set()
        reply = self.rec.bind(b)
        self.assertEqual(state.ACTIVE, reply['status'])
        self.assertEqual(1, self.host.ovs_ports[b.devices.qvo].tag)

    def test_failed_ovs_write_is_error_and_retried(self):
        self.rec.engine.ovs.fail = 'OVSDB is away'
        reply = self.rec.bind(make())
        self.assertEqual(state.ERROR, reply['status'])
        self.assertIn('OVSDB is away', reply['reason'])
        self.assertIn(reply['port_id'], self.rec.worker._dirty)

    def test_failed_sync_and_network_update_are_retried(self):
        a, b = make(), make()
        self.rec.engine.linux.fail = 'daemon lost'
        reply = self.rec.sync([a, b])
        self.assertEqual({state.ERROR}, {p['status'] for p in reply['ports']})
        self.assertEqual({a.port_id, b.port_id}, self.rec.worker._dirty)
        self.rec.engine.linux.fail = None
        self.rec.sync([a, b])
        self.rec.worker._dirty.clear()
        self.rec.engine.linux.fail = 'daemon lost'
        self.rec.network_update(a.network_id, 1400)
        self.assertEqual({a.port_id}, self.rec.worker._dirty)

    def test_lost_privileged_daemon_isolates_the_port(self):
        b = make()
        self.assertEqual(state.ACTIVE, self.rec.bind(b)['status'])
        del self.host.links[b.devices.qvb]
        self.rec.engine.linux.fail = 'daemon lost'
        result = self.rec._reconcile_ports([b.port_id])[b.port_id]
        self.assertEqual(state.ERROR, result.status)
        self.assertIn('daemon lost', result.reason)
        # Never left on its network with half a chain: off the switch
        # (its veth is to be made again) or on the dead VLAN.
        port = self.host.ovs_ports.get(b.devices.qvo)
        self.assertIn(port.tag if port else None,
                      (None, binding_mod.DEAD_VLAN))
        self.assertEqual(state.ERROR, self.rec.get(b.port_id)['status'])
        self.rec.engine.linux.fail = None
        result = self.rec._reconcile_ports([b.port_id])[b.port_id]
        self.assertEqual(state.ACTIVE, result.status)
        self.assertEqual(1, self.host.ovs_ports[b.devices.qvo].tag)


class TestReads(Base):

    def test_stored_port_is_pending_before_the_first_pass(self):
        # Stored durably by an earlier run; this one has not plugged yet.
        b = make()
        self.rec.store.put(b)
        fresh = self.open()
        self.assertEqual(state.PENDING, fresh.get(b.port_id)['status'])
        self.assertEqual([b.port_id],
                         [p['port_id'] for p in fresh.list()])
        self.assertEqual(1, fresh.counts()[state.PENDING])

    def test_first_pass_that_fails_still_lists_stored_ports(self):
        b = make()
        self.rec.store.put(b)
        fresh = self.open()
        fresh.engine.ovs.fail = 'OVSDB is away'
        fresh.worker.run_full_pass()
        self.assertEqual([b.port_id], [p['port_id'] for p in fresh.list()])
        self.assertEqual(state.ERROR, fresh.get(b.port_id)['status'])

    def test_reads_answer_while_a_plug_is_held(self):
        done = self.rec.bind(make())
        ovs = self.hold_ovs()
        b = make()
        threading.Thread(target=self.rec.bind, args=(b,),
                         daemon=True).start()
        self.assertTrue(ovs.entered.wait(5))
        for read in (lambda: self.rec.get(done['port_id']), self.rec.list,
                     self.rec.to_dict, lambda: self.rec.get(b.port_id)):
            started = time.monotonic()
            read()
            self.assertLess(time.monotonic() - started, 0.1)
        # Stored before the plug: PENDING until the plug is verified.
        self.assertEqual(state.PENDING, self.rec.get(b.port_id)['status'])
        self.assertEqual(state.ACTIVE,
                         self.rec.get(done['port_id'])['status'])


class TestStatuses(Base):

    def test_changes_are_pending_until_sent(self):
        b = make()
        self.rec.bind(b)
        book = self.rec.status
        self.assertEqual({b.port_id: (state.ACTIVE, None)}, book.pending())
        book.sent(book.pending())
        self.assertEqual({}, book.pending())

    def test_latest_status_wins_while_unsent(self):
        b = make()
        self.rec.bind(b)
        self.rec.engine.ovs.fail = 'away'
        # Admin down moves the port to VLAN 4095: an OVS write, which fails.
        self.rec.bind(binding_mod.Binding.from_dict(
            dict(b.to_dict(), admin_state_up=False, revision=1)))
        self.assertEqual(state.ERROR,
                         self.rec.status.pending()[b.port_id][0])

    def test_a_restart_reports_nothing_already_reported(self):
        b = make()
        self.rec.bind(b)
        self.rec.status.sent(self.rec.status.pending())
        fresh = self.open()
        fresh.worker.run_full_pass()
        self.assertEqual({}, fresh.status.pending())

    def test_unbound_ports_are_not_reported(self):
        b = make()
        self.rec.bind(b)
        self.rec.unbind(b.port_id)
        self.assertEqual({}, self.rec.status.pending())


class TestEventsAndGarbage(Base):

    def test_events_mark_only_their_ports(self):
        a, b = make(), make()
        self.rec.bind(a)
        self.rec.bind(b)
        self.rec.worker._dirty.clear()
        self.rec.on_link_names({a.devices.qbr, 'eth0', 'vnet99'})
        self.rec.on_ovsdb_row('update', 'Interface', b.devices.qvo)
        self.assertEqual({a.port_id, b.port_id}, self.rec.worker._dirty)

    def test_drift_is_repaired_by_the_worker(self):
        b = make()
        self.rec.bind(b)
        self.rec.worker.start()
        self.host.links.pop(b.devices.qbr)
        self.rec.on_link_names({b.devices.qbr})
        deadline = time.monotonic() + 5
        while b.devices.qbr not in self.host.links:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def test_orphans_of_this_host_are_collected_after_grace(self):
        b = make()
        self.rec.bind(b)
        # Forgotten by a store that lost it: an orphan marked as ours.
        self.rec.store._db.execute('DELETE FROM bindings')
        rec = self.open(orphan_grace=0)
        rec.worker.run_full_pass()
        self.assertEqual({}, self.host.ovs_ports)
        self.assertEqual(1, rec.stats.orphans_removed)

    def test_devices_of_another_owner_are_left_alone(self):
        b = make()
        self.rec.bind(b)
        qvo = self.host.ovs_ports[b.devices.qvo]
        self.host.ovs_ports[b.devices.qvo] = state.OvsPort(
            name=qvo.name, bridge=qvo.bridge, tag=qvo.tag,
            external_ids=dict(qvo.external_ids,
                              **{state.OWNER_KEY: 'another-host'}),
            ofport=qvo.ofport)
        self.rec.store._db.execute('DELETE FROM bindings')
        rec = self.open(orphan_grace=0)
        rec.worker.run_full_pass()
        self.assertIn(b.devices.qvo, self.host.ovs_ports)
        self.assertIn(b.devices.qbr, self.host.links)


class TestQuarantine(Base):

    def test_a_row_that_no_longer_validates_blocks_nothing(self):
        good, bad = make(), make()
        self.rec.bind(good)
        self.rec.bind(bad)
        self.rec.store._db.execute(
            'UPDATE bindings SET data = ? WHERE port_id = ?',
            (json.dumps(dict(bad.to_dict(), surprise=1)), bad.port_id))
        self.host.links.pop(good.devices.qbr)
        rec = self.open(orphan_grace=0)
        rec.worker.run_full_pass()
        self.assertTrue(rec.stats.last_full_pass_ok)
        self.assertEqual(['stored bindings no longer validate: %s' %
                          bad.port_id], rec.unhealthy())
        self.assertEqual(state.ACTIVE, rec.get(good.port_id)['status'])
        self.assertIn(good.devices.qbr, self.host.links)
        got = rec.get(bad.port_id)
        self.assertEqual(state.ERROR, got['status'])
        self.assertIn('no longer valid', got['reason'])
        self.assertEqual({good.port_id, bad.port_id},
                         {p['port_id'] for p in rec.list()})
        # Its chain is neither collected nor touched.
        self.assertIn(bad.devices.qvo, self.host.ovs_ports)
        self.assertEqual(state.ERROR, rec.status.pending()[bad.port_id][0])
        # The controller can replace it, or remove it.
        rec.sync([good])
        self.assertNotIn(bad.devices.qvo, self.host.ovs_ports)
        rec.worker.run_full_pass()
        self.assertEqual([], rec.unhealthy())


class TestStoreIdentity(Base):
    """A new or replaced store never makes the host's chains orphans."""

    def lose_store(self):
        """The state directory comes back empty (not mounted, say)."""
        self.rec.worker.run_full_pass()
        self.rec.store.close()
        path = self.useFixture(fixtures.TempDir()).path
        self.path = path
        return self.open(orphan_grace=0)

    def test_a_fresh_host_is_marked_with_its_store(self):
        self.rec.worker.run_full_pass()
        self.assertEqual(self.rec.store.identity,
                         self.rec.engine.ovs.external_ids['vifagent-store'])
        self.assertIsNone(self.rec.collector.suspended)

    def test_a_lost_store_keeps_every_chain_and_asks_for_a_resync(self):
        b = make()
        self.rec.bind(b)
        rec = self.lose_store()
        rec.worker.run_full_pass()
        rec.worker.run_full_pass()
        self.assertIn(b.devices.qvo, self.host.ovs_ports)
        self.assertIn(b.devices.qbr, self.host.links)
        self.assertIn('the store is new', rec.collector.suspended)
        self.assertEqual(1, rec.collector.deferred)
        self.assertEqual(['garbage collection suspended: %s' %
                          rec.collector.suspended], rec.unhealthy())
        self.assertEqual(rec.collector.suspended, rec.status.take_resync())
        self.assertEqual(rec.collector.suspended,
                         rec.to_dict()['garbage_collection']['suspended'])
        # The controller's full view: this port is no longer wanted.
        rec.sync([])
        self.assertIsNone(rec.collector.suspended)
        self.assertEqual(rec.store.identity,
                         rec.engine.ovs.external_ids['vifagent-store'])
        rec.worker.run_full_pass()
        self.assertNotIn(b.devices.qvo, self.host.ovs_ports)

    def test_a_replaced_store_is_told_apart(self):
        b = make()
        self.rec.bind(b)
        self.rec.worker.run_full_pass()
        other = store_mod.Store(self.useFixture(fixtures.TempDir()).path)
        other.put(make())
        # An old store (not new), but not the one that built the host.
        other.is_new = False
        self.addCleanup(other.close)
        rec = reconciler_mod.Reconciler(other, self.rec.engine,
                                        fakes.OWNER, orphan_grace=0)
        self.addCleanup(rec.stop)
        rec.worker.run_full_pass()
        self.assertIn('is not the one that built', rec.collector.suspended)
        self.assertIn(b.devices.qvo, self.host.ovs_ports)

    def test_removals_per_pass_are_capped(self):
        ports = [make() for _ in range(5)]
        for b in ports:
            self.rec.bind(b)
        self.rec.worker.run_full_pass()
        self.rec.store._db.execute('DELETE FROM bindings')
        rec = self.open(orphan_grace=0, max_orphan_removals=2)
        left = []
        for _ in range(3):
            rec.worker.run_full_pass()
            left.append(sum(b.devices.qvo in self.host.ovs_ports
                            for b in ports))
        self.assertEqual([3, 1, 0], left)


class TestNetnsPolicy(Base):

    def test_stored_netns_port_is_not_plugged_once_netns_is_off(self):
        b = make()
        self.rec.bind(b)
        self.host.links.pop(b.devices.tap)
        rec = self.open(netns_allowed=None)
        rec.worker.run_full_pass()
        got = rec.get(b.port_id)
        self.assertEqual(state.ERROR, got['status'])
        self.assertIn('netns ports are disabled', got['reason'])
        # Nothing was made for it: no tap, so no CAP_SYS_ADMIN daemon.
        self.assertNotIn(b.devices.tap, self.host.links)

    def test_namespace_outside_the_patterns_is_refused(self):
        b = make(netns='qrouter-1')
        self.rec.bind(b)
        self.assertNotIn(b.devices.tap, self.host.links)
        self.assertIn('not one this agent may use',
                      self.rec.get(b.port_id)['reason'])
