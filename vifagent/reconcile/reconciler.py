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

"""The reconciler: it owns every port's life on this host.

Desired state comes from the store (bindings, VLANs) and from the tap
source (libvirt's taps, or none); events reach it as device names, domain
UUIDs and OVSDB rows and only mark ports dirty; its worker repairs them.
Bind, unbind, sync and network updates are committed to the store first,
then applied under one lock, so replies describe a state really reached.

Reads never take that lock: they come from the store and from a snapshot
of the last verified result of each port, replaced after every apply.
"""

import collections
import dataclasses
import threading


from oslo_log import log as logging

from vifagent import binding as binding_mod
from vifagent.dataplane import firewall as fw_mod
from vifagent import exception
from vifagent import faults
from vifagent.reconcile import gc
from vifagent.reconcile import index as index_mod
from vifagent.reconcile import status as status_mod
from vifagent.reconcile import worker as worker_mod
from vifagent import secgroup
from vifagent import state
from vifagent import store as store_mod

LOG = logging.getLogger(__name__)


class Reconciler:
    """Ports of one host: store, plug engine, events, status memory.

    taps resolves a VM's tap (resolve(instance_uuid, mac) returning
    an object with device, bridge and down), or is None when
    no tap source is configured.
    """

    def __init__(self, store, engine, host, taps=None, resync_interval=60,
                 orphan_grace=60, max_retries=5, retry_cap=30.0,
                 max_orphan_removals=50, netns_allowed=None):
        self.store = store
        # None: netns ports are off; else the namespace name patterns.
        self.netns_allowed = netns_allowed
        self.engine = engine
        self.host = host
        self.taps = taps
        self.status = status_mod.StatusBook(store)
        self.index = index_mod.PortIndex()
        self.collector = gc.Collector(host, orphan_grace,
                                      max_orphan_removals)
        self.worker = worker_mod.Worker(
            self._reconcile_ports, self._full_pass, interval=resync_interval,
            max_retries=max_retries, retry_cap=retry_cap)
        self.stats = self.worker.stats
        self._lock = threading.RLock()
        self._results = {}
        self._snapshot = {}
        self._quarantined = []

    # -- life cycle -------------------------------------------------------
    def start(self):
        """A full pass (adopting every stored chain), then the worker."""
        self.worker.run_full_pass()
        self.worker.start()

    def stop(self):
        """Stop the worker and wait for a change under way to finish."""
        self.worker.stop()
        with self._lock:
            pass

    # -- events (any thread; they only mark ports) ------------------------
    def on_link_names(self, names):
        self.worker.mark(self.index.ports_of_names(names))

    def on_domains(self, uuids):
        self.worker.mark(self.index.ports_of_instances(uuids))

    def on_ovsdb_row(self, event, table, name):
        if table == 'Open_vSwitch' and event == 'create':
            self.worker.mark_all('connected to OVSDB')
        elif table == 'Bridge' and event == 'delete' and \
                name == self.engine.ovs.bridge:
            self.worker.mark_all('integration bridge deleted')
        elif table in ('Port', 'Interface'):
            pid = self.index.port_of(name)
            if pid:
                self.worker.mark([pid])

    def mark_all(self, why):
        self.worker.mark_all(why)

    # -- changes ----------------------------------------------------------
    def bind(self, binding):
        """Store one binding, plug it; return its reply."""
        with self._lock:
            self.store.put(binding, busy=self.engine.ovs.tags_in_use())
            faults.point('bind.stored')
            result = self._plug([binding])[binding.port_id]
        self._retry_failed({binding.port_id: result})
        return self._reply(binding, result)

    def unbind(self, port_id):
        """Forget a binding and remove its chain; idempotent."""
        with self._lock:
            old = self.store.delete(port_id)
            result = self._unplug([port_id])[port_id]
        return {'port_id': port_id, 'host': self.host,
                'was_bound': old is not None,
                'left_behind': result.reason, 'foreign': result.foreign}

    def sync(self, bindings):
        """Make bindings this host's complete set: add, update, remove."""
        with self._lock:
            results, removed = self.store.replace_all(
                bindings, busy=self.engine.ovs.tags_in_use())
            faults.point('sync.stored')
            removed_ids = [b.port_id for b in removed]
            if removed_ids:
                self._unplug(removed_ids)
            plugged = self._plug(bindings) if bindings else {}
            self._resume_collection()
        self._retry_failed(plugged)
        by_action = collections.defaultdict(list)
        for b, (action, _) in zip(bindings, results):
            by_action[action].append(b.port_id)
        return {'added': by_action[store_mod.CREATED],
                'updated': by_action[store_mod.UPDATED],
                'unchanged': by_action[store_mod.UNCHANGED],
                'removed': removed_ids,
                'ports': [self._reply(b, plugged[b.port_id])
                          for b in bindings]}

    def network_update(self, network_id, mtu):
        """Give every port of a network a new MTU (stored, then applied)."""
        with self._lock:
            changed = [dataclasses.replace(b, mtu=mtu)
                       for b in self.store.all()
                       if b.network_id == network_id and b.mtu != mtu]
            if not changed:
                return
            LOG.info('Network %s: MTU %d for %d ports', network_id, mtu,
                     len(changed))
            self.store.put_many(changed)
            results = self._plug(changed)
        self._retry_failed(results)

    def _retry_failed(self, results):
        """Hand ports a change left failed to the worker's retries."""
        failed = [pid for pid, r in results.items() if r.failed]
        if failed:
            self.worker.mark(failed)  # retried with backoff

    # -- security groups --------------------------------------------------
    def sync_groups(self, groups):
        """Make ``groups`` the complete set held; refilter their ports."""
        with self._lock:
            before = self.store.groups()
            result = self.store.replace_groups(groups)
            changed = set(result[store_mod.CREATED] +
                          result[store_mod.UPDATED] + result['removed'])
            self._refilter(changed, before)
        return {'added': result[store_mod.CREATED],
                'updated': result[store_mod.UPDATED],
                'unchanged': result[store_mod.UNCHANGED],
                'removed': result['removed']}

    def update_group(self, group):
        """One group changed: ignored unless held and not older."""
        with self._lock:
            before = self.store.groups()
            action = self.store.update_group(group)
            if action is None:
                LOG.debug('Ignoring update of security group %s (not held '
                          'or older)', group.id)
                return None
            if action != store_mod.UNCHANGED:
                self._refilter({group.id}, before)
            return action

    def get_group(self, group_id):
        group = self.store.group(group_id)
        if group is None:
            raise exception.SecurityGroupNotFound(security_group_id=group_id)
        return group.to_dict()

    def list_groups(self):
        return [g.to_dict() for g in self.store.groups().values()]

    def _refilter(self, changed, before):
        """Bring the filters that depend on ``changed`` groups up to date.

        A group whose only change is its members costs one set update;
        any other change plugs again the ports whose filter uses it.
        """
        if not changed:
            return
        after = self.store.groups()
        members_only = [
            after[gid] for gid in sorted(changed)
            if gid in before and gid in after and
            dataclasses.replace(before[gid], revision=0,
                                members=after[gid].members) ==
            dataclasses.replace(after[gid], revision=0)]
        if members_only:
            error = self.engine.update_members(members_only)
            if error is None:
                changed = changed - {g.id for g in members_only}
            if not changed:
                return
        groups = dict(before)
        groups.update(after)
        ports = []
        for b in self.store.all():
            if not b.port_security_enabled:
                continue
            needed = set(b.security_groups)
            for gid in b.security_groups:
                if gid in groups:
                    needed |= groups[gid].remote_groups()
            if needed & changed:
                ports.append(b)
        if ports:
            LOG.info('Security groups %s changed: %d ports to refilter',
                     ', '.join(sorted(changed)), len(ports))
            results = self._plug(ports)
            failed = [pid for pid, r in results.items() if r.failed]
            if failed:
                self.worker.mark(failed)

    # -- reads (never wait for a plug) ------------------------------------
    def get(self, port_id):
        binding = self.store.get(port_id)
        if binding is None:
            raise exception.PortNotFound(port_id=port_id)
        return self._reply(binding, self._snapshot.get(port_id))

    def list(self):
        snapshot = self._snapshot
        bindings, quarantined = self.store.load()
        return [self._reply(b, snapshot.get(b.port_id))
                for b in sorted(bindings + quarantined,
                                key=lambda b: b.port_id)]

    def counts(self):
        """Bound ports by status (PENDING: not verified yet)."""
        snapshot = self._snapshot
        counts = collections.Counter(
            snapshot[pid].status if pid in snapshot else state.PENDING
            for pid in self.store.port_ids())
        return {s: counts.get(s, 0) for s in state.STATUSES}

    def _reply(self, binding, result):
        if isinstance(binding, store_mod.Quarantined):
            return self._quarantined_reply(binding)
        if result is None:
            # Stored, not plugged and verified yet.
            devices = dataclasses.asdict(binding.devices)
            devices['tap'] = None
            result = state.PortResult(
                port_id=binding.port_id, status=state.PENDING,
                reason='not reconciled yet', devices=devices,
                vlan=self.store.vlan_for(binding.network_id))
        return {
            'port_id': binding.port_id,
            'host': self.host,
            'status': result.status,
            'reason': result.reason,
            'vlan': result.vlan,
            'revision': binding.revision,
            'network_id': binding.network_id,
            'mac_address': binding.mac_address,
            'mtu': binding.mtu,
            'admin_state_up': binding.admin_state_up,
            'port_security_enabled': binding.port_security_enabled,
            'security_groups': list(binding.security_groups),
            'devices': result.devices,
        }

    def _quarantined_reply(self, row):
        """A stored row today's rules refuse: ERROR, chain left as it is."""
        return {
            'port_id': row.port_id, 'host': self.host,
            'status': state.ERROR,
            'reason': 'stored binding no longer valid: %s' % row.reason,
            'vlan': self.store.vlan_for(row.network_id),
            'revision': row.revision, 'network_id': row.network_id,
            'mac_address': None, 'mtu': None, 'admin_state_up': None,
            'devices': dict(dataclasses.asdict(
                binding_mod.device_names(row.port_id)), tap=None),
        }

    # -- the worker's passes ----------------------------------------------
    def _reconcile_ports(self, port_ids):
        """Repair the chains of these ports (those still bound)."""
        with self._lock:
            bindings = [b for b in map(self.store.get, port_ids)
                        if isinstance(b, binding_mod.Binding)]
            return self._plug(bindings) if bindings else {}

    def _full_pass(self):
        """Every port, the integration bridge, garbage collection.

        Quarantined rows are kept ERROR and their chains untouched: they
        count as bound, so garbage collection never takes them.
        """
        with self._lock:
            if self.engine.ovs.ensure_bridge():
                self.stats.repairs['integration_bridge'] += 1
            bindings, quarantined = self.store.load()
            keep = {binding_mod.name_key(row.port_id) for row in quarantined}
            keep |= {binding_mod.name_key(pid)
                     for pid in self.store.unbinding()}
            results = self._plug(bindings, full=True, keep=keep)
            self._quarantine(quarantined)
            observed = self.engine.observe(None)
            bound = {b.port_id for b in bindings + quarantined}
            tombstones = self.store.unbinding()
            self._check_store(observed, bound | set(tombstones))
            self._collect_garbage(observed, bound, tombstones)
            return results

    def _quarantine(self, rows):
        self._quarantined = sorted(row.port_id for row in rows)
        results = {}
        for row in rows:
            reply = self._quarantined_reply(row)
            results[row.port_id] = state.PortResult(
                port_id=row.port_id, status=state.ERROR,
                reason=reply['reason'], vlan=reply['vlan'],
                devices=reply['devices'])
        if rows:
            LOG.error('%d stored bindings no longer validate; kept and '
                      'reported ERROR: %s', len(rows),
                      ', '.join(r.port_id for r in rows))
        self._results.update(results)
        self._snapshot = dict(self._results)
        self.status.record({pid: (r.status, r.reason)
                            for pid, r in results.items()})

    def _check_store(self, observed, known):
        """Suspend collection (and ask for a resync) if the store is wrong."""
        reason = self.collector.check_store(observed, known, self.store,
                                            self.engine.ovs)
        if reason:
            self.status.request_resync(reason)

    def _resume_collection(self):
        """After a sync_ports the store holds the controller's view."""
        if self.collector.resume(self.store, self.engine.ovs):
            self.worker.mark_all('garbage collection resumed')

    def _collect_garbage(self, observed, bound, tombstones):
        due = self.collector.due(observed, bound, tombstones)
        if due:
            LOG.info('Removing %d orphaned chains: %s', len(due),
                     ', '.join(due))
            self._unplug(due)
            self.stats.orphans_removed += len(due)

    # -- plug and unplug (under the lock) ---------------------------------
    def _desired(self, binding, vlan):
        """A binding with its tap: its own for netns, libvirt's for VMs."""
        if binding.owns_tap:
            return state.DesiredPort.for_binding(binding, vlan)
        if self.taps is None:
            return state.DesiredPort.for_binding(
                binding, vlan, down='libvirt is disabled: no tap')
        tap = self.taps.resolve(binding.instance_uuid, binding.mac_address)
        return state.DesiredPort.for_binding(
            binding, vlan, tap=tap.device, tap_bridge=tap.bridge,
            down=tap.down)

    def _refusal(self, binding):
        """Why a stored binding must not be plugged now, or None."""
        try:
            binding_mod.check_netns(binding, self.netns_allowed)
        except exception.InvalidBinding as e:
            return str(e)
        return None

    def _with_filter(self, port, groups, zones, clashes):
        """The DesiredPort with its filter, or held if it cannot have one.

        A port that names a group not held yet waits for it on the dead
        VLAN (PENDING); groups that mix stateful and stateless, or a group
        whose id starts like another held group's (they would share chain
        and set names), are an ERROR. Either way it is never ACTIVE
        unfiltered.
        """
        b = port.binding
        if not b.port_security_enabled:
            return port
        missing = [g for g in b.security_groups if g not in groups]
        remote = set()
        for gid in b.security_groups:
            if gid in groups:
                remote |= groups[gid].remote_groups()
        missing += sorted(g for g in remote if g not in groups)
        if missing:
            return dataclasses.replace(port, hold=(
                state.PENDING, 'waiting for security groups: %s' %
                ', '.join(missing)))
        for gid in sorted(set(b.security_groups) | remote):
            if gid in clashes:
                return dataclasses.replace(port, hold=(
                    state.ERROR, 'security group %s shares the start of its '
                    'id (which names its chains and sets) with %s' % (
                        gid, ', '.join(clashes[gid]))))
        mine = tuple(groups[g] for g in b.security_groups)
        if len({g.stateful for g in mine}) > 1:
            return dataclasses.replace(port, hold=(
                state.ERROR, 'security groups mix stateful and stateless'))
        zone = zones.get(b.port_id)
        if zone is None:
            return dataclasses.replace(port, hold=(
                state.ERROR, 'no conntrack zone allocated'))
        return dataclasses.replace(port, filter=fw_mod.PortFilter(
            b, zone, mine, port.tap))

    def _plug(self, bindings, full=False, keep=()):
        """Plug stored bindings; record and return their results.

        A binding stored under rules this agent no longer runs with (a
        netns port after netns ports were turned off) is not plugged: it
        is ERROR with the reason, and its chain is left as it is.
        ``full``: the firewall step also collects our objects that no
        port explains, but those of ``keep`` (port name keys).
        """
        vlans = self.store.vlans()
        groups = self.store.groups()
        zones = self.store.zones()
        clashes = secgroup.name_clashes(groups)
        results = {}
        ports = []
        keep = set(keep)
        for b in bindings:
            refusal = self._refusal(b)
            if refusal:
                keep.add(binding_mod.name_key(b.port_id))
                results[b.port_id] = state.PortResult(
                    port_id=b.port_id, status=state.ERROR, reason=refusal,
                    vlan=vlans[b.network_id],
                    devices=dict(dataclasses.asdict(b.devices), tap=None))
            else:
                ports.append(self._with_filter(
                    self._desired(b, vlans[b.network_id]), groups, zones,
                    clashes))
        for port in ports:
            self.index.add(port.port_id, port.binding.instance_uuid,
                           port.tap)
        results.update(self.engine.plug(ports, groups, full=full,
                                        keep=keep))
        self._results.update(results)
        self._snapshot = dict(self._results)
        self.status.record({pid: (r.status, r.reason)
                            for pid, r in results.items()})
        return results

    def _unplug(self, port_ids):
        """Remove chains; drop the tombstones of those fully removed."""
        results = self.engine.unplug(port_ids)
        for pid in port_ids:
            self._results.pop(pid, None)
            self.index.remove(pid)
        self._snapshot = dict(self._results)
        self.status.forget(port_ids)
        clean = [pid for pid, r in results.items() if r.status is None]
        for result in results.values():
            if result.status is not None:
                LOG.error('Port %s unbound but %s', result.port_id,
                          result.reason)
        self.store.forget(clean)
        return results

    # -- the agent's state ------------------------------------------------
    def to_dict(self):
        counts = self.counts()
        return {
            'ports': sum(counts.values()),
            'ports_by_status': counts,
            'counters': dataclasses.asdict(self.engine.counters),
            'firewall': dataclasses.asdict(self.engine.firewall_stats),
            'reconcile': self.stats.to_dict(),
            'garbage_collection': self.collector.to_dict(),
            'store': {'identity': self.store.identity},
        }

    def unhealthy(self):
        """Reasons the reconciler is unhealthy (empty when healthy)."""
        problems = []
        if self.stats.last_full_pass_ok is False:
            problems.append('the last full reconcile pass failed')
        if self.collector.suspended:
            problems.append('garbage collection suspended: %s' %
                            self.collector.suspended)
        if self._quarantined:
            problems.append('stored bindings no longer validate: %s' %
                            ', '.join(self._quarantined))
        return problems
