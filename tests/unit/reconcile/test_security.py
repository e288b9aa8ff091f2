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

"""Port security in the reconciler, over a host and firewall in memory."""

import uuid

import fixtures
from oslotest import base

from tests.unit import fakes
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.reconcile import reconciler as reconciler_mod
from vifagent import secgroup
from vifagent import state
from vifagent import store as store_mod


def make_group(group_id=None, stateful=True, members=(), rules=None):
    return secgroup.SecurityGroup.from_dict({
        'id': group_id or str(uuid.uuid4()), 'stateful': stateful,
        'rules': rules if rules is not None else [
            {'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'icmp'}],
        'members': {'IPv4': list(members)}})


def make(groups=(), security=True, **extra):
    pid = str(uuid.uuid4())
    data = {'port_id': pid, 'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': str(uuid.uuid4()),
            'network_id': str(uuid.uuid4()), 'vif_type': 'netns',
            'netns': 'vm-' + pid[:6]}
    if security:
        data.update(port_security_enabled=True, fixed_ips=['10.0.0.1'],
                    security_groups=[g.id for g in groups])
    data.update(extra)
    return binding_mod.Binding.from_dict(data)


class TestPortSecurity(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.path = self.useFixture(fixtures.TempDir()).path
        self.host = fakes.FakeHost()
        self.firewall = fakes.FakeFirewall()
        self.rec = self.open()

    def open(self):
        store = store_mod.Store(self.path)
        self.addCleanup(store.close)
        rec = reconciler_mod.Reconciler(
            store, fakes.engine(self.host, self.firewall), fakes.OWNER,
            resync_interval=3600, netns_allowed=['vm-*'])
        self.addCleanup(rec.stop)
        return rec

    def tag(self, b):
        return self.host.ovs_ports[b.devices.qvo].tag

    def keys(self):
        return self.firewall.rules.keys()

    def test_waits_for_its_group_on_the_dead_vlan(self):
        g = make_group()
        b = make([g])
        reply = self.rec.bind(b)
        self.assertEqual(state.PENDING, reply['status'])
        self.assertIn(g.id, reply['reason'])
        self.assertEqual(binding_mod.DEAD_VLAN, self.tag(b))
        self.assertEqual(set(), self.keys())
        self.rec.sync_groups([g])
        self.assertEqual(state.ACTIVE, self.rec.get(b.port_id)['status'])
        self.assertNotEqual(binding_mod.DEAD_VLAN, self.tag(b))
        self.assertEqual({binding_mod.name_key(b.port_id)}, self.keys())

    def test_a_failed_filter_is_error_never_active(self):
        g = make_group()
        self.rec.sync_groups([g])
        self.firewall.fail = 'iptables-restore: boom'
        b = make([g])
        reply = self.rec.bind(b)
        self.assertEqual(state.ERROR, reply['status'])
        self.assertIn('boom', reply['reason'])
        self.assertEqual(binding_mod.DEAD_VLAN, self.tag(b))
        self.firewall.fail = None
        self.assertEqual(state.ACTIVE, self.rec.bind(b)['status'])

    def test_mixed_stateful_groups_are_error(self):
        one, two = make_group(), make_group(stateful=False)
        self.rec.sync_groups([one, two])
        reply = self.rec.bind(make([one, two]))
        self.assertEqual(state.ERROR, reply['status'])
        self.assertIn('stateful', reply['reason'])

    def test_group_ids_naming_the_same_chain_are_error(self):
        # Group chains carry the first 21 characters of the group id: two
        # groups sharing them would share a chain, so neither is used.
        one = make_group('7c3d1a2b-0000-4000-8000-00000000aaaa')
        two = make_group('7c3d1a2b-0000-4000-8000-00000000bbbb')
        fine = make_group()
        self.rec.sync_groups([one, two, fine])
        reply = self.rec.bind(make([one]))
        self.assertEqual(state.ERROR, reply['status'])
        self.assertIn(two.id, reply['reason'])
        self.assertEqual(set(), self.keys())
        self.assertEqual(state.ACTIVE, self.rec.bind(make([fine]))['status'])

    def test_without_port_security_nothing_is_written(self):
        b = make(security=False)
        self.assertEqual(state.ACTIVE, self.rec.bind(b)['status'])
        self.rec.worker.run_full_pass()
        self.rec.unbind(b.port_id)
        self.assertEqual([], self.firewall.applied)

    def test_unbind_and_security_off_remove_the_filter(self):
        g = make_group()
        self.rec.sync_groups([g])
        a, b = make([g]), make([g])
        self.rec.sync([a, b])
        self.assertEqual(2, len(self.keys()))
        self.rec.unbind(a.port_id)
        self.assertEqual({binding_mod.name_key(b.port_id)}, self.keys())
        plain = binding_mod.Binding.from_dict(dict(
            b.to_dict(), port_security_enabled=False, security_groups=[],
            revision=1))
        self.assertEqual(state.ACTIVE, self.rec.bind(plain)['status'])
        self.assertEqual(set(), self.keys())

    def test_member_change_writes_one_set(self):
        remote = make_group(members=['10.0.0.9'])
        g = make_group(rules=[{'direction': 'ingress', 'ethertype': 'IPv4',
                               'remote_group_id': remote.id}])
        self.rec.sync_groups([g, remote])
        ports = [make([g]) for _ in range(3)]
        self.rec.sync(ports)
        before = len(self.firewall.applied)
        chains = dict(self.firewall.rules.chains)
        changed = make_group(remote.id, members=['10.0.0.9', '10.0.0.10'])
        changed = secgroup.SecurityGroup.from_dict(dict(changed.to_dict(),
                                                        revision=1))
        self.assertEqual(store_mod.UPDATED, self.rec.update_group(changed))
        # One set written, and no batch of rules at all.
        self.assertEqual([1], self.firewall.member_updates)
        self.assertEqual(before, len(self.firewall.applied))
        self.assertEqual(chains, self.firewall.rules.chains)
        self.assertEqual(frozenset(['10.0.0.9', '10.0.0.10']),
                         self.firewall.rules.sets[
                             secgroup.set_name(remote.id, 4)][1])
        # Older, or not held: ignored.
        self.assertIsNone(self.rec.update_group(remote))
        self.assertIsNone(self.rec.update_group(make_group()))

    def test_verification_reads_again_only_what_was_written(self):
        g = make_group()
        self.rec.sync_groups([g])
        self.rec.sync([make([g]), make([g])])
        # New ports (no set): both families and the ARP table written
        # and read again.
        self.assertEqual([None, {4, 6, 'arp'}],
                         self.firewall.looks[-2:])
        # An IPv4 rule added to the group: one chain written, and only
        # the IPv4 tables read again to verify it.
        changed = secgroup.SecurityGroup.from_dict(dict(
            g.to_dict(), revision=1, rules=g.to_dict()['rules'] + [
                {'direction': 'ingress', 'ethertype': 'IPv4',
                 'protocol': 'tcp', 'port_range_min': 22}]))
        self.rec.sync_groups([changed])
        self.assertEqual(1, self.firewall.applied[-1].chains_written())
        self.assertEqual([None, {4}], self.firewall.looks[-2:])
        for b in self.rec.list():
            self.assertEqual(state.ACTIVE, b['status'])

    def test_the_last_firewall_write_is_timed(self):
        g = make_group()
        self.rec.sync_groups([g])
        self.assertIsNone(self.rec.to_dict()['firewall']['last_apply_ms'])
        self.rec.sync([make([g])])
        took = self.rec.to_dict()['firewall']['last_apply_ms']
        self.assertGreaterEqual(took, 0)
        # A pass that writes nothing leaves it as it was.
        self.firewall.rules.chains = dict(self.firewall.rules.chains)
        self.rec.worker.run_full_pass()
        self.assertEqual(took,
                         self.rec.to_dict()['firewall']['last_apply_ms'])

    def test_groups_are_durable_and_typed(self):
        g = make_group()
        self.rec.sync_groups([g])
        self.assertEqual(g.to_dict(), self.open().get_group(g.id))
        self.assertRaises(exception.SecurityGroupNotFound,
                          self.rec.get_group, str(uuid.uuid4()))
        stale = secgroup.SecurityGroup.from_dict(dict(g.to_dict(),
                                                      revision=2))
        self.rec.sync_groups([stale])
        self.assertRaises(exception.StaleRevision, self.rec.sync_groups,
                          [g, make_group()])
        self.assertEqual([stale.to_dict()], self.rec.list_groups())

    def test_healthy_full_pass_writes_nothing(self):
        g = make_group()
        self.rec.sync_groups([g])
        self.rec.sync([make([g]), make(security=False)])
        before = len(self.firewall.applied)
        self.rec.worker.run_full_pass()
        self.assertEqual(before, len(self.firewall.applied))
        # Drift: a flushed chain is rewritten, alone.
        key = next(iter(self.keys()))
        self.firewall.rules.chains[(4, 'filter', 'vfa-i' + key)] = ()
        self.rec.worker.run_full_pass()
        self.assertEqual(1, self.firewall.applied[-1].chains_written())
