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

"""The plug engine: observe, plan, apply in batches, verify.

``plug`` and ``unplug`` take any number of ports. One call costs one link
observation, at most one privsep round trip for all kernel writes, at most
one OVSDB transaction, and one verifying observation; a healthy chain
costs the observations only. A port is reported healthy only when a fresh
observation plans nothing more for it.
"""

import dataclasses
import time

from oslo_log import log as logging

from vifagent import binding as binding_mod
from vifagent import exception
from vifagent import faults
from vifagent.reconcile import observe as observe_mod
from vifagent.reconcile import plan as plan_mod
from vifagent import state

__all__ = [
    'Counters',
    'Engine',
    'FirewallStats',
]

LOG = logging.getLogger(__name__)

# How long to wait for ovs-vswitchd to attach a qvo (give it an ofport)
# after a veth was re-created under an existing OVS port.
_ATTACH_WAIT = 2.0


@dataclasses.dataclass
class Counters:
    """Writes made, for tests, benchmarks and the status command."""

    link_ops: int = 0
    link_deletes: int = 0
    ovsdb_transactions: int = 0
    netns_ops: int = 0
    #: firewall: batches applied, per-port chains written, dispatch
    #: rules added or deleted, sets written
    firewall_batches: int = 0
    firewall_chains: int = 0
    firewall_rules: int = 0
    firewall_sets: int = 0


@dataclasses.dataclass
class FirewallStats:
    """What the firewall step read and how long a member change took."""

    dumps: int = 0
    #: how long the last membership update took to apply, in ms
    last_members_ms: float = None
    #: how long the last firewall step that wrote took (render, look,
    #: plan, apply, verify), in ms
    last_apply_ms: float = None


class Engine:
    """Builds and removes hybrid chains on one host."""

    def __init__(self, linux, ovs, owner, firewall=None):
        self.linux = linux
        self.ovs = ovs
        self.owner = owner
        #: None: no firewall on this host (port security ports are ERROR)
        self.firewall = firewall
        self.observer = observe_mod.Observer(linux, ovs)
        self.counters = Counters()
        self.firewall_stats = FirewallStats()
        # Port keys that had firewall objects at the last look (None: not
        # looked yet; a host without port security never needs to).
        self._filtered_keys = None

    @classmethod
    def from_conf(cls, conf, ensure_bridge=True, wait=True):
        """Connect to netlink and OVSDB as configured; ensure br-int.

        Without ``wait`` an unreachable OVSDB is not an error: it is
        tried again in the background (see OvsDataplane.start).
        """
        # Imported here so the planner and tests of it need neither.
        from vifagent.dataplane import linux
        from vifagent.dataplane import ovs
        ovs_dp = ovs.OvsDataplane(conf.ovs.ovsdb_connection,
                                  conf.ovs.integration_bridge,
                                  timeout=conf.ovs.ovsdb_timeout,
                                  timeout_per_port=(
                                      conf.ovs.ovsdb_timeout_per_port),
                                  max_ports=(
                                      conf.ovs.max_ports_per_transaction),
                                  datapath_type=conf.ovs.datapath_type,
                                  ssl_key_file=conf.ovs.ssl_key_file,
                                  ssl_cert_file=conf.ovs.ssl_cert_file,
                                  ssl_ca_cert_file=conf.ovs.ssl_ca_cert_file)
        from vifagent.dataplane import firewall
        ovs_dp.start(ensure_bridge, wait=wait)
        return cls(linux.LinuxDataplane(conf.agent.privsep_timeout), ovs_dp,
                   conf.host, firewall.Firewall(conf.agent.privsep_timeout))

    def stop(self):
        self.ovs.stop()
        self.linux.close()

    def observe(self, names):
        """What the host holds for ``names`` (None: all of ours)."""
        return self.observer.observe(names)

    # -- firewall ---------------------------------------------------------
    def _filter(self, ports, groups, full, keep):
        """Apply the filters of ``ports``; return them with failures held.

        Only port keys in play are touched: those of ports with a filter
        and of ports that had one, never those in ``keep``. ``full`` (the
        full pass) always looks, so it learns which keys have objects. A
        port whose filter is not in place afterwards is held on the dead
        VLAN in ERROR: never ACTIVE unfiltered.
        """
        from vifagent.dataplane import firewall as fw_mod
        fw = self.firewall
        filtered = [p for p in ports if p.filter is not None and not p.hold]
        keep = set(keep) | {p.key for p in ports if p.hold}
        if fw is None:
            if not filtered:
                return ports
            return [dataclasses.replace(
                p, hold=(state.ERROR, 'no firewall on this host'))
                if p in filtered else p for p in ports]
        # Only the keys of these ports: other agents on the host (tests,
        # a demo) own theirs. What no port explains is collected with its
        # chain, by unplug (see unfilter).
        known = self._filtered_keys or set()
        scope = ({p.key for p in filtered} |
                 {p.key for p in ports if p.key in known}) - keep
        # The full pass looks only where there is something to look for:
        # a host without port security never starts the privileged daemon
        # or runs a firewall tool for it.
        if not scope and not (full and known):
            return ports
        started = time.monotonic()
        desired = fw_mod.render([p.filter for p in filtered], groups)
        failed = {}
        try:
            observed = self._fw_observe()
            batch = fw_mod.plan(desired, observed, scope, keep)
            if not batch.empty():
                error = fw.apply(batch)
                self.counters.firewall_batches += 1
                self.counters.firewall_chains += batch.chains_written()
                self.counters.firewall_rules += sum(
                    len(t.delete_rules) + len(
                        [c for c, _ in t.append if c.startswith('vifagent')])
                    for t in batch.tables.values())
                self.counters.firewall_sets += batch.set_writes()
                if error:
                    LOG.error('Firewall batch failed: %s', error)
                    failed = {p.key: 'firewall: %s' % error
                              for p in filtered}
                    observed = self._fw_observe()
                else:
                    # Verify what was written; the rest was just read.
                    observed = self._fw_observe(batch.parts(), observed)
            bad = fw_mod.differing(desired, observed,
                                   {p.key for p in filtered})
            for key in bad:
                failed.setdefault(key, 'filter not in place after apply')
            if not batch.empty():
                self.firewall_stats.last_apply_ms = round(
                    (time.monotonic() - started) * 1000, 2)
        except (OSError, ValueError, exception.PrivilegedError) as e:
            LOG.error('Firewall unavailable: %s', e)
            failed = {p.key: 'firewall: %s' % e for p in filtered}
        return [dataclasses.replace(p, hold=(state.ERROR, failed[p.key]))
                if p.key in failed and p.filter is not None else p
                for p in ports]

    def _fw_observe(self, parts=None, last=None):
        observed = self.firewall.observe(parts, last)
        self.firewall_stats.dumps += 1
        self._filtered_keys = observed.keys()
        return observed

    def update_members(self, groups):
        """Write new members of ``groups`` into their sets; one batch.

        A membership change rewrites sets only: no port's rules.
        Returns None or the error.
        """
        if self.firewall is None or not groups:
            return None
        started = time.monotonic()
        try:
            written, error = self.firewall.update_members(groups)
        except (OSError, ValueError, exception.PrivilegedError) as e:
            written, error = 0, str(e)
        self.counters.firewall_batches += 1
        self.counters.firewall_sets += written
        self.firewall_stats.last_members_ms = round(
            (time.monotonic() - started) * 1000, 2)
        if error:
            LOG.error('Could not update the members of %s: %s',
                      ', '.join(g.id for g in groups), error)
        return error

    def unfilter(self, port_ids):
        """Remove the firewall objects of ports (those that have any)."""
        keys = {binding_mod.name_key(pid) for pid in port_ids}
        if self.firewall is None:
            return
        if self._filtered_keys is None:
            try:
                self._fw_observe()
            except (OSError, ValueError, exception.PrivilegedError) as e:
                LOG.error('Firewall unavailable: %s', e)
                return
        if not keys & self._filtered_keys:
            return
        from vifagent.dataplane import firewall as fw_mod
        try:
            batch = fw_mod.plan(fw_mod.render([], {}), self._fw_observe(),
                                keys & self._filtered_keys)
            if not batch.empty():
                error = self.firewall.apply(batch)
                self.counters.firewall_batches += 1
                if error:
                    LOG.error('Could not remove firewall objects of %s: %s',
                              ', '.join(sorted(port_ids)), error)
        except (OSError, ValueError, exception.PrivilegedError) as e:
            LOG.error('Firewall unavailable: %s', e)

    # -- plug -------------------------------------------------------------
    def plug(self, ports, groups=None, full=False, keep=()):
        """Make each DesiredPort's chain whole; return {port_id: result}.

        ``groups`` (``{id: SecurityGroup}``) feeds the ports' filters;
        ``full`` makes the firewall step look even when no port has a
        filter; port keys in ``keep`` are never touched.
        """
        ports = list(ports)
        if not ports and not full:
            return {}
        ports = self._filter(ports, groups or {}, full, keep)
        if not ports:
            return {}
        names = observe_mod.names_of(ports)
        observed = self.observe(names)
        plan = plan_mod.plan_plug(ports, observed, self.owner,
                                  self.ovs.bridge)
        if plan.empty() and not plan.conflicts:
            # Nothing to do: the observation just made is the verification.
            return self._verify(ports, names, plan, {}, observed)
        errors, isolated = self._apply(plan, ports)
        return self._verify(ports, names, plan, errors, isolated=isolated)

    def _apply(self, plan, ports=()):
        """Apply a plan; return the errors and the ports left isolated.

        ``({port_id: error}, {port_id})``: ports that failed, and ports
        kept on the dead VLAN because their Linux side is not complete.
        """
        errors = dict(plan.conflicts)
        if plan.link_ops or plan.deletes:
            result = self._linux_apply(plan.link_ops, plan.deletes)
            self.counters.link_ops += sum(map(len, plan.link_ops.values()))
            self.counters.link_deletes += len(plan.deletes)
            errors.update(result['ports'])
            for name, error in result['deletes'].items():
                LOG.warning('Could not delete %s: %s', name, error)
            faults.point('plug.links_applied')
        netns_up = {pid: netns for pid, netns in plan.netns_up.items()
                    if pid not in errors}
        if netns_up:
            try:
                errors.update(self.linux.netns_up(netns_up))
            except exception.PrivilegedError as e:
                errors.update(dict.fromkeys(netns_up, str(e)))
            self.counters.netns_ops += len(netns_up)
        isolate = set()
        if plan.ovs_adds or plan.ovs_updates:
            isolate = self._unverified(ports, plan, errors)
        self._apply_ovs(plan, errors, isolate)
        return errors, isolate

    def _linux_apply(self, groups, deletes):
        """Kernel writes; a lost privileged daemon fails the whole batch.

        The batch may have run in part: the verification that follows
        sees what is there, and every port of it is an error until a
        retry on a new daemon completes it.
        """
        try:
            return self.linux.apply(groups, deletes)
        except exception.PrivilegedError as e:
            LOG.error('Kernel writes for %d ports failed: %s', len(groups),
                      e)
            return {'ports': dict.fromkeys(groups, str(e)),
                    'deletes': dict.fromkeys(deletes, str(e))}

    def _unverified(self, ports, plan, errors):
        """Ports whose Linux side a fresh look does not find complete.

        Isolate first: the OVS side of a port is given its real VLAN only
        once its Linux side is seen whole, not merely reported written.
        """
        changed = set(plan.link_ops) | set(plan.netns_up)
        touched = [p for p in ports
                   if p.port_id in changed and p.port_id not in errors]
        if not touched:
            return set()
        check = plan_mod.plan_plug(
            touched, self.observe(observe_mod.names_of(touched)),
            self.owner, self.ovs.bridge)
        unverified = set(check.link_ops) | set(check.netns_up) | set(
            check.conflicts)
        for pid in sorted(unverified):
            LOG.warning('Port %s: Linux side not complete after apply; '
                        'its OVS port stays on VLAN %d', pid,
                        binding_mod.DEAD_VLAN)
        return unverified

    def _apply_ovs(self, plan, errors, isolate=()):
        # Isolate first: a port whose Linux side failed is not added; one
        # whose Linux side is not seen complete is added (or moved) to
        # the dead VLAN until a later apply completes it.
        dead = set(errors) | set(isolate)
        adds = [dataclasses.replace(s, tag=binding_mod.DEAD_VLAN)
                if s.port_id in isolate else s
                for s in plan.ovs_adds if s.port_id not in errors]
        updates = [state.OvsPortSpec(s.port_id, s.name, binding_mod.DEAD_VLAN)
                   if s.port_id in dead else s for s in plan.ovs_updates]
        if not (adds or updates or plan.ovs_deletes):
            return
        deletes = plan.ovs_deletes
        readds = set(deletes) & {spec.name for spec in adds}
        try:
            if readds:
                # Deleted and added again in one transaction, a port would
                # look unchanged to ovs-vswitchd: remove it first.
                self.counters.ovsdb_transactions += self.ovs.apply(
                    [], [], sorted(readds))
                faults.point('ovs.readd_removed')
                deletes = [name for name in deletes if name not in readds]
            self.counters.ovsdb_transactions += self.ovs.apply(
                adds, updates, deletes)
        except exception.OvsdbError as e:
            LOG.error('OVSDB transaction failed: %s', e)
            for spec in adds + updates:
                errors.setdefault(spec.port_id, str(e))
            for name in plan.ovs_deletes:
                errors.setdefault(name, str(e))

    def _verify(self, ports, names, plan, errors, observed=None,
                isolated=()):
        """Observe again and derive each port's status from what is there."""
        deadline = time.monotonic() + _ATTACH_WAIT
        while True:
            if observed is None:
                observed = self.observe(names)
            check = plan_mod.plan_plug(ports, observed, self.owner,
                                       self.ovs.bridge)
            unattached = [
                p for p in ports
                if p.port_id not in errors and
                p.port_id not in check.ports() and
                not _attached(observed.ovs_ports.get(p.devices.qvo))]
            if not unattached or time.monotonic() > deadline:
                break
            time.sleep(0.02)
            observed = None
        results = {}
        for port in ports:
            pid = port.port_id
            result = state.PortResult(
                port_id=pid, status=state.ERROR, vlan=port.vlan,
                devices=_devices(port, observed),
                repairs=plan.repairs.get(pid, []))
            if pid in errors:
                result.reason = errors[pid]
            elif pid in check.ports():
                result.reason = 'unrepaired: %s' % ', '.join(
                    check.repairs.get(pid, ['drift']))
                if pid in isolated:
                    # Isolated on the dead VLAN until a retry completes it.
                    result.status = state.PENDING
                    result.reason = 'on VLAN %d until its Linux side is ' \
                        'complete; %s' % (binding_mod.DEAD_VLAN, result.reason)
            elif port.hold:
                result.status, result.reason = port.hold
            elif not _attached(observed.ovs_ports.get(port.devices.qvo)):
                qvo = observed.ovs_ports.get(port.devices.qvo)
                result.reason = 'ovs-vswitchd did not attach %s%s' % (
                    port.devices.qvo, ': %s' % qvo.error if qvo and
                    qvo.error else '')
            else:
                result.reason = _down_reason(port, result.devices['tap'])
                result.status = state.DOWN if result.reason else state.ACTIVE
            results[pid] = result
        return results

    # -- unplug -----------------------------------------------------------
    def unplug(self, port_ids):
        """Remove what is ours of each port's chain; return results.

        A port's status afterwards is None when nothing of ours is left,
        ERROR otherwise. Foreign devices are listed and left alone.
        """
        port_ids = list(port_ids)
        names = set()
        for pid in port_ids:
            names.update(binding_mod.device_names(pid).all())
        observed = self.observe(names)
        plan = plan_mod.plan_unplug(port_ids, observed)
        # Take the ports off the switch before their devices go. Failures
        # are logged here and show in the results, which come from a
        # fresh observation of what is left.
        if plan.ovs_deletes:
            try:
                self.counters.ovsdb_transactions += self.ovs.apply(
                    [], [], plan.ovs_deletes)
            except exception.OvsdbError as e:
                LOG.error('Could not remove OVS ports: %s', e)
            faults.point('unplug.ovs_removed')
        if plan.deletes:
            result = self._linux_apply({}, plan.deletes)
            self.counters.link_deletes += len(plan.deletes)
            for name, error in result['deletes'].items():
                LOG.error('Could not delete %s: %s', name, error)
        for name in plan.foreign:
            LOG.warning('Leaving %s alone: it carries no vifagent marker',
                        name)
        # The filter goes last: the port is off the switch by now.
        self.unfilter(port_ids)
        left = self.observe(names)
        results = {}
        for pid in port_ids:
            devices = binding_mod.device_names(pid)
            mine = [n for n in devices.all()
                    if n in left.links and left.links[n].owned_by(pid)]
            port = left.ovs_ports.get(devices.qvo)
            if port is not None and port.owned_by(pid):
                mine.append('ovs:%s' % devices.qvo)
            foreign = [n for n in plan.foreign if n in devices.all()]
            results[pid] = state.PortResult(
                port_id=pid,
                status=state.ERROR if mine else None,
                reason='left behind: %s' % ', '.join(mine) if mine else None,
                foreign=foreign)
        return results


def _attached(ovs_port):
    return (ovs_port is not None and ovs_port.ofport is not None and
            ovs_port.ofport > 0 and not ovs_port.error)


def _down_reason(port, tap):
    """Why a port whose chain is whole is not ACTIVE, or None if it is."""
    if not port.binding.admin_state_up:
        return 'administratively down'
    if port.down:
        return port.down
    if tap is None:
        return 'no tap' if port.tap is None else 'tap %s is absent' % port.tap
    return None


def _devices(port, observed):
    """Device names for replies; ``tap`` is None while there is none."""
    devices = dataclasses.asdict(port.devices)
    devices['tap'] = port.tap if port.tap in observed.links else None
    return devices
