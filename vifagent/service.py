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

"""The agent: RPC in, durable store, plug engine, status reports out.

Data flows one way: a request is validated, committed to the store, then
the engine makes the host match and the resulting status is reported.
One lock serialises changes to the store and the dataplane, so replies
always describe a state that was really reached.
"""

import collections
import dataclasses
import threading
import time

from oslo_log import log as logging

from vifagent import binding as binding_mod
from vifagent.dataplane import libvirt as libvirt_dp
from vifagent.dataplane import rtnl
from vifagent import exception
from vifagent import metrics
from vifagent import privileged
from vifagent.reconcile import apply
from vifagent.reconcile import plan as plan_mod
from vifagent.reconcile import state
from vifagent.reconcile import worker
from vifagent import rpc
from vifagent.rpc import reporter as reporter_mod
from vifagent.rpc import server as server_mod
from vifagent import store as store_mod

LOG = logging.getLogger(__name__)

#: Most bindings a sync_ports call may carry.
MAX_SYNC = 10000


class Agent:
    """One compute node's agent; start() opens every connection."""

    def __init__(self, conf):
        self.conf = conf
        self.store = None
        self.engine = None
        self.reporter = None
        self._server = None
        self._transport = None
        self._lock = threading.RLock()
        self._results = {}
        self._stopping = threading.Event()
        self._heartbeat = None
        self.started_at = None
        self.reconciler = None
        self._monitor = None
        # First 11 characters of each bound port id (what its device names
        # carry) -> port id, to map events to ports.
        self._keys = {}
        # port id -> instance uuid; libvirt tap name <-> port id: to map
        # domain and tap events to ports.
        self._instance_of = {}
        self._taps = {}
        self._tap_of = {}
        self.libvirt = None
        self._orphans_seen = {}
        self._foreign_reported = set()
        # port_id -> (status, reason) last sent to the controller
        self._reported = {}
        self._metrics = None
        self._serving = False

    # -- life cycle ---------------------------------------------------------
    def start(self):
        conf = self.conf
        privileged.configure(conf)
        self.store = store_mod.Store(conf.agent.state_path,
                                     conf.agent.default_mtu)
        self._reported = self.store.reported()
        # The integration bridge is the full pass's job: a slow or absent
        # OVSDB then fails a pass, which is retried, not the whole start.
        self.engine = apply.Engine.from_conf(conf, ensure_bridge=False)
        self._transport = rpc.get_transport(conf)
        self.reporter = reporter_mod.Reporter(self._transport, conf)
        self.started_at = time.time()
        self.reconciler = worker.Reconciler(
            self._reconcile_ports, self._full_pass,
            interval=conf.agent.resync_interval,
            max_retries=conf.agent.max_retries,
            retry_cap=conf.agent.retry_backoff_cap)
        if conf.libvirt.enabled:
            # Connected before the first pass, so it already sees the taps.
            self.libvirt = libvirt_dp.Watcher(
                conf.libvirt.connection_uri, self._on_domains,
                lambda: self.reconciler.mark_all('connected to libvirt'),
                backoff_cap=conf.libvirt.reconnect_backoff_cap,
                keepalive_interval=conf.libvirt.keepalive_interval,
                reload_interval=conf.agent.resync_interval)
            self.libvirt.start()
        # Start is a full pass before serving: it re-adopts every stored
        # chain, writing nothing when the host is healthy.
        self.reconciler.run_full_pass()
        self._monitor = rtnl.LinkMonitor(
            self._on_link_names,
            lambda: self.reconciler.mark_all('netlink events were lost'))
        self._monitor.start()
        self.engine.ovs.add_listener(self._on_ovsdb_row)
        self.reconciler.start()
        self._server = server_mod.get_server(self._transport, self, conf)
        self._server.start()
        self._serving = True
        if conf.metrics.enabled:
            self._metrics = metrics.MetricsServer(
                self, conf.metrics.bind_host, conf.metrics.bind_port)
            self._metrics.start()
        self._heartbeat = threading.Thread(target=self._beat,
                                           name='heartbeat', daemon=True)
        self._heartbeat.start()
        LOG.info('vifagent serving topic %s as %s with %d ports',
                 conf.agent.rpc_topic, conf.host, len(self._results))

    def stop(self):
        """Stop serving; every chain stays as it is."""
        self._stopping.set()
        self._serving = False
        if self._metrics is not None:
            self._metrics.stop()
        if self._server is not None:
            self._server.stop()
            self._server.wait()
        if self._monitor is not None:
            self._monitor.stop()
        if self.engine is not None:
            self.engine.ovs.remove_listener(self._on_ovsdb_row)
        if self.reconciler is not None:
            self.reconciler.stop()
        if self.libvirt is not None:
            self.libvirt.stop()
        with self._lock:
            if self.engine is not None:
                self.engine.stop()
            if self.store is not None:
                self.store.close()
        if self._transport is not None:
            self._transport.cleanup()
        LOG.info('vifagent stopped; chains left in place')

    # -- health ---------------------------------------------------------------
    def dependencies(self):
        """Whether each connection the agent needs is up."""
        deps = {'rpc': self._serving, 'ovsdb': self.engine.ovs.connected()}
        if self.libvirt is not None:
            deps['libvirt'] = self.libvirt.connected()
        return deps

    def health(self):
        """Reasons the agent is unhealthy; empty when it is healthy."""
        problems = ['%s is not connected' % name
                    for name, up in sorted(self.dependencies().items())
                    if not up]
        if self.reconciler.stats.last_full_pass_ok is False:
            problems.append('the last full reconcile pass failed')
        return problems

    # -- events ---------------------------------------------------------------
    def _port_of(self, name):
        if name in self._taps:
            return self._taps[name]
        key = binding_mod.device_key(name)
        return self._keys.get(key) if key else None

    def _on_domains(self, uuids):
        """libvirt saw these domains change: their ports need a look."""
        self.reconciler.mark({pid for pid, uuid in
                              list(self._instance_of.items())
                              if uuid in uuids})

    def _on_link_names(self, names):
        self.reconciler.mark(
            {pid for pid in map(self._port_of, names) if pid})

    def _on_ovsdb_row(self, event, table, name):
        if table == 'Open_vSwitch' and event == 'create':
            self.reconciler.mark_all('connected to OVSDB')
        elif table == 'Bridge' and event == 'delete' and \
                name == self.conf.ovs.integration_bridge:
            self.reconciler.mark_all('integration bridge deleted')
        elif table in ('Port', 'Interface'):
            pid = self._port_of(name)
            if pid:
                self.reconciler.mark([pid])

    # -- reconciliation -------------------------------------------------------
    def _reconcile_ports(self, port_ids):
        """Repair the chains of these ports (those still bound)."""
        with self._lock:
            bindings = [b for b in map(self.store.get, port_ids) if b]
            return self._plug(bindings) if bindings else {}

    def _full_pass(self):
        """Every port, the integration bridge, garbage collection."""
        with self._lock:
            if self.engine.ovs.ensure_bridge():
                self.reconciler.stats.repairs['integration_bridge'] += 1
            bindings = self.store.all()
            results = self._plug(bindings) if bindings else {}
            self._collect_garbage({b.port_id for b in bindings})
            return results

    def _collect_garbage(self, bound):
        """Remove orphans past their grace period; report foreign devices."""
        observed = self.engine.observe(None)
        tombstones = self.store.unbinding()
        orphans, foreign = plan_mod.find_orphans(
            observed, bound, self.conf.host, tombstones)
        now = time.monotonic()
        grace = self.conf.agent.orphan_grace
        for pid in list(self._orphans_seen):
            if pid not in orphans:
                del self._orphans_seen[pid]
        # Tombstoned ports were unbound on request: no grace needed.
        due = [pid for pid in orphans
               if pid in tombstones or
               now - self._orphans_seen.setdefault(pid, now) >= grace]
        if due:
            LOG.info('Removing %d orphaned chains: %s', len(due),
                     ', '.join(due))
            self._unplug(due)
            self.reconciler.stats.orphans_removed += len(due)
        for name in foreign:
            if name not in self._foreign_reported:
                self._foreign_reported.add(name)
                LOG.warning('Device %s is named like ours but no binding '
                            'or marker makes it ours: leaving it alone',
                            name)

    def _beat(self):
        interval = self.conf.agent.report_interval
        while not self._stopping.wait(interval):
            self.reporter.report_state(self.get_agent_state())

    # -- helpers ------------------------------------------------------------
    def _binding(self, data):
        return binding_mod.Binding.from_dict(data,
                                             self.conf.agent.default_mtu)

    def _desired(self, binding, vlan):
        """A binding with its tap: its own for netns, libvirt's for VMs."""
        if binding.owns_tap:
            return state.DesiredPort.for_binding(binding, vlan)
        if self.libvirt is None:
            return state.DesiredPort.for_binding(
                binding, vlan, down='libvirt is disabled: no tap')
        tap = self.libvirt.resolve(binding.instance_uuid,
                                   binding.mac_address)
        return state.DesiredPort.for_binding(
            binding, vlan, tap=tap.device, tap_bridge=tap.bridge,
            down=tap.down)

    def _set_tap(self, port_id, tap):
        old = self._tap_of.pop(port_id, None)
        if old is not None and self._taps.get(old) == port_id:
            del self._taps[old]
        if tap is not None:
            self._tap_of[port_id] = tap
            self._taps[tap] = port_id

    def _plug(self, bindings):
        """Plug stored bindings; record, report and return their results."""
        vlans = self.store.vlans()
        ports = [self._desired(b, vlans[b.network_id]) for b in bindings]
        for port in ports:
            pid = port.port_id
            self._keys[binding_mod.name_key(pid)] = pid
            self._instance_of[pid] = port.binding.instance_uuid
            self._set_tap(pid, port.tap)
        results = self.engine.plug(ports)
        changes = []
        for b in bindings:
            result = results[b.port_id]
            self._results[b.port_id] = (b, result)
            reported = (result.status, result.reason)
            if self._reported.get(b.port_id) != reported:
                self._reported[b.port_id] = reported
                changes.append({'port_id': b.port_id,
                                'status': result.status,
                                'reason': result.reason})
        if changes:
            # What was reported is remembered across restarts, so a restart
            # of a healthy host reports nothing: no flaps, no storm.
            self.store.set_reported(
                {c['port_id']: (c['status'], c['reason']) for c in changes})
            self.reporter.port_status(changes)
        return results

    def _unplug(self, port_ids):
        """Remove chains; drop the tombstones of those fully removed."""
        results = self.engine.unplug(port_ids)
        for pid in port_ids:
            self._results.pop(pid, None)
            self._reported.pop(pid, None)
            self._keys.pop(binding_mod.name_key(pid), None)
            self._set_tap(pid, None)
            self._instance_of.pop(pid, None)
        clean = [pid for pid, r in results.items() if r.status is None]
        for result in results.values():
            if result.status is not None:
                LOG.error('Port %s unbound but %s', result.port_id,
                          result.reason)
        self.store.forget(clean)
        return results

    def _reply(self, port_id):
        b, result = self._results[port_id]
        return {
            'port_id': port_id,
            'host': self.conf.host,
            'status': result.status,
            'reason': result.reason,
            'vlan': result.vlan,
            'revision': b.revision,
            'network_id': b.network_id,
            'mac_address': b.mac_address,
            'mtu': b.mtu,
            'admin_state_up': b.admin_state_up,
            'devices': result.devices,
        }

    # -- API ------------------------------------------------------------------
    def bind_port(self, data):
        with metrics.BIND_LATENCY.time():
            return self._bind_port(data)

    def _bind_port(self, data):
        b = self._binding(data)
        with self._lock:
            self.store.put(b)
            result = self._plug([b])[b.port_id]
            reply = self._reply(b.port_id)
        if result.status == state.ERROR:
            # The reconciler retries it with backoff.
            self.reconciler.mark([b.port_id])
        return reply

    def unbind_port(self, port_id):
        port_id = binding_mod.validate_uuid(port_id)
        with self._lock:
            old = self.store.delete(port_id)
            results = self._unplug([port_id])
        result = results[port_id]
        return {'port_id': port_id, 'host': self.conf.host,
                'was_bound': old is not None,
                'left_behind': result.reason, 'foreign': result.foreign}

    def get_port(self, port_id):
        port_id = binding_mod.validate_uuid(port_id)
        with self._lock:
            if port_id not in self._results:
                raise exception.PortNotFound(port_id=port_id)
            return self._reply(port_id)

    def list_ports(self):
        with self._lock:
            return [self._reply(pid) for pid in sorted(self._results)]

    def sync_ports(self, bindings):
        """Make ``bindings`` this host's complete set: add, update, remove."""
        if not isinstance(bindings, list):
            raise exception.InvalidBinding(
                field='bindings', reason='must be a list, not %s' %
                type(bindings).__name__)
        if len(bindings) > MAX_SYNC:
            raise exception.InvalidBinding(
                field='bindings', reason='more than %d bindings' % MAX_SYNC)
        # Validate everything before anything changes.
        parsed = [self._binding(data) for data in bindings]
        seen = set()
        for b in parsed:
            if b.port_id in seen:
                raise exception.InvalidBinding(
                    field='port_id', reason='%s appears twice' % b.port_id)
            seen.add(b.port_id)
        with self._lock:
            results, removed = self.store.replace_all(parsed)
            removed_ids = [b.port_id for b in removed]
            if removed_ids:
                self._unplug(removed_ids)
            if parsed:
                self._plug(parsed)
            by_action = collections.defaultdict(list)
            for b, (action, _) in zip(parsed, results):
                by_action[action].append(b.port_id)
            return {'added': by_action[store_mod.CREATED],
                    'updated': by_action[store_mod.UPDATED],
                    'unchanged': by_action[store_mod.UNCHANGED],
                    'removed': removed_ids,
                    'ports': [self._reply(b.port_id) for b in parsed]}

    def network_update(self, network_id, mtu):
        """Apply a network's new MTU to every port of it on this host."""
        network_id = binding_mod.validate_uuid(network_id, 'network_id')
        mtu = binding_mod.validate_mtu(mtu)
        with self._lock:
            changed = [dataclasses.replace(b, mtu=mtu)
                       for b in self.store.all()
                       if b.network_id == network_id and b.mtu != mtu]
            if not changed:
                return
            LOG.info('Network %s: MTU %d for %d ports', network_id, mtu,
                     len(changed))
            self.store.put_many(changed)
            self._plug(changed)

    def get_agent_state(self):
        with self._lock:
            counts = collections.Counter(
                result.status for _, result in self._results.values())
            return {
                'host': self.conf.host,
                'topic': self.conf.agent.rpc_topic,
                'api_version': rpc.API_VERSION,
                'integration_bridge': self.conf.ovs.integration_bridge,
                'ports': len(self._results),
                'ports_by_status': {s: counts.get(s, 0)
                                    for s in state.STATUSES},
                'started_at': self.started_at,
                'uptime': round(time.time() - self.started_at, 1),
                'counters': dataclasses.asdict(self.engine.counters),
                'reconcile': self.reconciler.stats.to_dict(),
                'metrics': ('http://%s:%d/' % self._metrics.address
                            if self._metrics else None),
                'libvirt': self.libvirt.to_dict() if self.libvirt else None,
            }
