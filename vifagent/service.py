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
from vifagent import exception
from vifagent import privileged
from vifagent.reconcile import apply
from vifagent.reconcile import state
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

    # -- life cycle ---------------------------------------------------------
    def start(self):
        conf = self.conf
        privileged.configure(conf)
        self.store = store_mod.Store(conf.agent.state_path,
                                     conf.agent.default_mtu)
        self.engine = apply.Engine.from_conf(conf)
        self._transport = rpc.get_transport(conf)
        self.reporter = reporter_mod.Reporter(self._transport, conf)
        self.started_at = time.time()
        # Re-adopt every stored chain before serving: a healthy host makes
        # no writes here, a damaged one is repaired.
        self.resync()
        self._server = server_mod.get_server(self._transport, self, conf)
        self._server.start()
        self._heartbeat = threading.Thread(target=self._beat,
                                           name='heartbeat', daemon=True)
        self._heartbeat.start()
        LOG.info('vifagent serving topic %s as %s with %d ports',
                 conf.agent.rpc_topic, conf.host, len(self._results))

    def stop(self):
        """Stop serving; every chain stays as it is."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
            self._server.wait()
        with self._lock:
            if self.engine is not None:
                self.engine.stop()
            if self.store is not None:
                self.store.close()
        if self._transport is not None:
            self._transport.cleanup()
        LOG.info('vifagent stopped; chains left in place')

    def _beat(self):
        interval = self.conf.agent.report_interval
        while not self._stopping.wait(interval):
            self.reporter.report_state(self.get_agent_state())

    # -- helpers ------------------------------------------------------------
    def _binding(self, data):
        return binding_mod.Binding.from_dict(data,
                                             self.conf.agent.default_mtu)

    @staticmethod
    def _tap(binding):
        # libvirt tap discovery arrives with the libvirt driver; until
        # then only the agent's own netns taps are known.
        return None

    def _plug(self, bindings):
        """Plug stored bindings; record, report and return their results."""
        vlans = self.store.vlans()
        ports = [state.DesiredPort.for_binding(b, vlans[b.network_id],
                                               tap=self._tap(b))
                 for b in bindings]
        results = self.engine.plug(ports)
        changes = []
        for b in bindings:
            result = results[b.port_id]
            previous = self._results.get(b.port_id)
            self._results[b.port_id] = (b, result)
            if previous is None or previous[1].status != result.status or \
                    previous[1].reason != result.reason:
                changes.append({'port_id': b.port_id,
                                'status': result.status,
                                'reason': result.reason})
        self.reporter.port_status(changes)
        return results

    def _unplug(self, port_ids):
        results = self.engine.unplug(port_ids)
        for pid in port_ids:
            self._results.pop(pid, None)
        left = [r for r in results.values() if r.status is not None]
        for result in left:
            LOG.error('Port %s unbound but %s', result.port_id, result.reason)
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
    def resync(self):
        """Plug every stored binding (used at start)."""
        with self._lock:
            bindings = self.store.all()
            if bindings:
                self._plug(bindings)

    def bind_port(self, data):
        b = self._binding(data)
        with self._lock:
            self.store.put(b)
            self._plug([b])
            return self._reply(b.port_id)

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
                'uptime': round(time.time() - self.started_at, 1),
                'counters': dataclasses.asdict(self.engine.counters),
            }
