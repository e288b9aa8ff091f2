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

"""Plug benchmark: vifagent's engine against os-vif's hybrid plug.

Run from the top of the repository, as root, on a host where Open vSwitch
(ovsdb-server and ovs-vswitchd) is running::

    python -m benchmarks.plug --ports 200 --repeat 3

Each run makes its own integration bridge (``br-b<6 hex digits>``, userspace
datapath) and its own port ids, and removes the bridge and every device it
made when it ends, on failure and Ctrl-C too. Nothing else on the host is
touched, so the benchmark can run beside other tests.

Every round uses fresh port ids for each scenario:

1. vifagent single: one ``Engine.plug([port])`` call per port, then one
   ``Engine.unplug([port_id])`` call per port.
2. vifagent batch: one ``plug`` of all ports; a second ``plug`` of the same
   healthy ports, which must write nothing; one ``unplug`` of all.
3. os-vif: ``os_vif.plug`` of a ``VIFBridge`` (the ovs plugin's hybrid
   path) per port, then ``os_vif.unplug`` per port.

Every vifagent result must be DOWN after plug (host side complete, no VM)
and None after unplug. Every chain, whoever built it, is also checked
independently: after plug qbr exists, qvb is in it, qvo is qvb's peer and
an OVS port on the bridge with the right iface-id and an ofport; after
unplug nothing of it is left.

The table shows, per metric, the median over the rounds with the minimum
and maximum; a per-port metric is the median latency of the round's ports.
Then come the engine's phases, its writes and the ratios against os-vif,
``plug_ratio_vs_osvif`` on the last line.
"""

import argparse
import cProfile
import dataclasses
import errno
import importlib.metadata
import io
import os
import platform
import pstats
import random
import signal
import statistics
import sys
import time
import traceback
import uuid

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.schema.open_vswitch import impl_idl
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from vifagent import binding
from vifagent import conf as vifagent_conf
from vifagent import privileged
from vifagent.privileged import linux as priv_linux
from vifagent.reconcile import apply
from vifagent.reconcile import plan as plan_mod
from vifagent.reconcile import state

VLAN = 10
MTU = 1500
DATAPATH = 'netdev'

# Engine phases, timed exclusively (a phase's time excludes the phases it
# calls), in the order they happen.
OBSERVE_LINKS = 'observe links (netlink)'
OBSERVE_OVS = 'observe OVS (IDL cache)'
PLAN = 'plan'
LINK_WRITES = 'link writes (privsep)'
OVSDB_TXN = 'OVSDB transaction'
VERIFY_WAIT = 'verify wait (ofport poll)'
OTHER = 'other (engine overhead)'
PHASES = (OBSERVE_LINKS, OBSERVE_OVS, PLAN, LINK_WRITES, OVSDB_TXN,
          VERIFY_WAIT, OTHER)

SCENARIOS = ('single plug', 'single unplug', 'batch plug', 'batch replug',
             'batch unplug')

# (label, key): the rows of the result table.
ROWS = (
    ('vifagent single plug (per port)', 'va_single_plug_pp'),
    ('vifagent single plug (total)', 'va_single_plug_total'),
    ('vifagent batch plug (total)', 'va_batch_plug_total'),
    ('vifagent batch plug (per port)', 'va_batch_plug_pp'),
    ('vifagent batch replug (healthy)', 'va_batch_replug_total'),
    ('os-vif plug (per port)', 'osvif_plug_pp'),
    ('os-vif plug (total)', 'osvif_plug_total'),
    ('vifagent single unplug (per port)', 'va_single_unplug_pp'),
    ('vifagent single unplug (total)', 'va_single_unplug_total'),
    ('vifagent batch unplug (total)', 'va_batch_unplug_total'),
    ('vifagent batch unplug (per port)', 'va_batch_unplug_pp'),
    ('os-vif unplug (per port)', 'osvif_unplug_pp'),
    ('os-vif unplug (total)', 'osvif_unplug_total'),
)

# How long an independent check waits for the kernel and our OVSDB replica
# to show what a plug or unplug did.
CHECK_TIMEOUT = 10.0


class BenchmarkError(Exception):
    """A result is wrong: the run stops, its numbers mean nothing."""


@dataclasses.dataclass(frozen=True)
class BenchPort:
    port_id: str
    mac: str
    instance_uuid: str

    @property
    def names(self):
        return binding.device_names(self.port_id)


class Phases:
    """Exclusive wall time per label of wrapped (nested) calls."""

    def __init__(self):
        self.reset()
        self._stack = []

    def reset(self):
        self.times = dict.fromkeys(PHASES, 0.0)
        self.calls = dict.fromkeys(PHASES, 0)

    def wrap(self, label, func):
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._stack.pop()
                self.times[label] += elapsed - inner
                self.calls[label] += 1
                if self._stack:
                    self._stack[-1] += elapsed
        return timed

    def take(self, total):
        """Return the phase times of ``total`` (seconds), then reset."""
        times = dict(self.times)
        times[OTHER] = total - sum(times.values())
        calls = dict(self.calls)
        self.reset()
        return times, calls


class _OwnConnectionIdl(impl_idl.OvsdbIdl):
    """ovsdbapp's Open_vSwitch API with its connection kept per instance.

    ovsdbapp's backend keeps its connection in a class attribute: the first
    instance's connection then serves every later instance of the class in
    the process. The benchmark's view must neither lend its connection to
    vifagent or os-vif nor borrow theirs.
    """

    @property
    def ovsdb_connection(self):
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn):
        self._own_connection = conn


class Switch:
    """The benchmark's own OVSDB view: checks chains, removes the bridge."""

    _COLUMNS = {
        'Open_vSwitch': ['bridges', 'cur_cfg', 'next_cfg', 'ovs_version'],
        'Bridge': ['name', 'ports'],
        'Port': ['name', 'interfaces'],
        'Interface': ['name', 'external_ids', 'ofport'],
    }

    def __init__(self, remote, timeout=30):
        helper = idlutils.get_schema_helper(remote, 'Open_vSwitch')
        for table, columns in self._COLUMNS.items():
            helper.register_columns(table, columns)
        idl = connection.OvsdbIdl(remote, helper)
        self._conn = connection.Connection(idl, timeout=timeout)
        self.api = _OwnConnectionIdl(self._conn)

    def stop(self):
        self._conn.stop()

    def version(self):
        with self._conn.lock:
            for row in self.api.tables['Open_vSwitch'].rows.values():
                return (row.ovs_version or ['(version unset)'])[0]
        return '(version unknown)'

    def bridge_exists(self, name):
        with self._conn.lock:
            return any(b.name == name for b in
                       self.api.tables['Bridge'].rows.values())

    def delete_bridge(self, name):
        self.api.del_br(name, if_exists=True).execute(check_error=True)

    def ports(self):
        """Return ``{port name: (bridge, iface external_ids, ofport)}``."""
        result = {}
        with self._conn.lock:
            tables = self.api.tables
            owner = {p.uuid: b.name for b in tables['Bridge'].rows.values()
                     for p in b.ports}
            for port in tables['Port'].rows.values():
                iface = port.interfaces[0] if port.interfaces else None
                ofport = None
                if iface is not None and iface.ofport:
                    ofport = iface.ofport[0]
                result[port.name] = (
                    owner.get(port.uuid),
                    dict(iface.external_ids) if iface is not None else {},
                    ofport)
        return result


def _kind(msg):
    info = msg.get('IFLA_LINKINFO')
    return info.get('IFLA_INFO_KIND') if info is not None else None


def chain_problems(ports, bridge, links, ovs_ports):
    """What is missing from each port's chain (empty when all is whole)."""
    problems = []
    for port in ports:
        pid, names = port.port_id, port.names
        qbr = links.get(names.qbr)
        qvb = links.get(names.qvb)
        qvo = links.get(names.qvo)
        ovs_port = ovs_ports.get(names.qvo)
        if qbr is None or _kind(qbr) != 'bridge':
            problems.append('%s: no bridge %s' % (pid, names.qbr))
        elif qvb is None or _kind(qvb) != 'veth':
            problems.append('%s: no veth %s' % (pid, names.qvb))
        elif qvb.get('IFLA_MASTER') != qbr['index']:
            problems.append('%s: %s is not in %s' %
                            (pid, names.qvb, names.qbr))
        elif qvo is None or _kind(qvo) != 'veth':
            problems.append('%s: no veth %s' % (pid, names.qvo))
        elif qvo.get('IFLA_LINK') != qvb['index']:
            problems.append('%s: %s is not the peer of %s' %
                            (pid, names.qvo, names.qvb))
        elif ovs_port is None or ovs_port[0] != bridge:
            problems.append('%s: no OVS port %s on %s' %
                            (pid, names.qvo, bridge))
        elif ovs_port[1].get('iface-id') != pid:
            problems.append('%s: OVS port %s has iface-id %s' %
                            (pid, names.qvo, ovs_port[1].get('iface-id')))
        elif not ovs_port[2] or ovs_port[2] < 0:
            problems.append('%s: OVS port %s has no ofport' %
                            (pid, names.qvo))
    return problems


def leftover_problems(ports, links, ovs_ports):
    """What is still there of each port's chain (empty when all is gone)."""
    problems = []
    for port in ports:
        names = port.names
        for name in (names.qbr, names.qvb, names.qvo):
            if name in links:
                problems.append('%s: %s still exists' % (port.port_id, name))
        if names.qvo in ovs_ports:
            problems.append('%s: OVS port %s still exists' %
                            (port.port_id, names.qvo))
    return problems


def wait_for(ipr, switch, find_problems, ports, what):
    """Poll links and OVS ports until ``find_problems`` finds none."""
    deadline = time.monotonic() + CHECK_TIMEOUT
    while True:
        links = {msg.get('IFLA_IFNAME'): msg for msg in ipr.link('dump')}
        problems = find_problems(ports, links, switch.ports())
        if not problems:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError('%s: %d problems; first: %s' % (
                what, len(problems), '; '.join(problems[:3])))
        time.sleep(0.05)


def expect_status(results, ports, want, what):
    """Abort unless every port's engine result has status ``want``."""
    bad = []
    for port in ports:
        result = results.get(port.port_id)
        if result is None:
            bad.append('%s: no result' % port.port_id)
        elif result.status != want:
            bad.append('%s: status %s, reason %s' %
                       (port.port_id, result.status, result.reason))
    if bad:
        raise BenchmarkError(
            '%s: %d of %d ports are not %s; first: %s' %
            (what, len(bad), len(ports),
             want if want else 'removed (status None)', '; '.join(bad[:3])))


class OsVif:
    """os-vif's own ovs plugin, driven the way nova drives it."""

    def __init__(self, conf, ovsdb, network_id):
        # Imported here so that --skip-osvif runs without os-vif installed.
        import os_vif
        from os_vif import objects
        from oslo_privsep import priv_context
        from vif_plug_ovs import ovs as vif_ovs
        from vif_plug_ovs.ovsdb import impl_idl as vif_impl_idl
        from vif_plug_ovs import privsep as vif_privsep

        self._os_vif = os_vif
        self._objects = objects
        self._api_class = vif_impl_idl.NeutronOvsdbIdl
        self.network_id = network_id
        self.version = importlib.metadata.version('os-vif')
        # The plugin reads its options when os_vif.initialize() builds it:
        # register them first so our values are the ones it reads.
        group = 'os_vif_ovs'
        conf.register_opts(vif_ovs.OvsPlugin.CONFIG_OPTS, group=group)
        conf.set_override('ovsdb_interface', 'native', group)
        conf.set_override('ovsdb_connection', ovsdb, group)
        conf.set_override('network_device_mtu', MTU, group)
        os_vif.initialize()
        # A privsep daemon forked from this root process: no sudo needed.
        # Fork before anything starts threads.
        self._context = vif_privsep.vif_plug
        parent = os.getpid()
        try:
            self._context.start(priv_context.Method.FORK)
        finally:
            # The forked daemon comes back here only when it dies of an
            # exception (Ctrl-C reaches it too): it must not go on to run
            # the benchmark or its cleanup.
            if os.getpid() != parent:
                os._exit(1)

    def stop(self):
        self._context.stop()

    def connect(self, port, bridge):
        """Open os-vif's OVSDB connection now, through its public API.

        os-vif connects on first use. ovsdbapp keeps a connection in a
        class-level slot that a subclass shares with its parent until it
        fills its own, so os-vif connects before anything else in this
        process can. Unplugging a port never plugged is a no-op that
        connects.
        """
        self.unplug(self.vif(port, bridge), self.instance(port))

    def connection(self):
        """The OVSDB connection os-vif's API uses (None before connect)."""
        return self._api_class.__dict__.get('_ovsdb_connection')

    def vif(self, port, bridge):
        objects = self._objects
        network = objects.network.Network(id=self.network_id, bridge=bridge,
                                          mtu=MTU)
        profile = objects.vif.VIFPortProfileOpenVSwitch(
            interface_id=port.port_id, datapath_type=DATAPATH)
        # VIFBridge is what takes the ovs plugin down its hybrid path
        # (_plug_bridge): qbr, the qvb/qvo veth, qvo on the OVS bridge.
        return objects.vif.VIFBridge(
            id=port.port_id, address=port.mac, network=network,
            plugin='ovs', port_profile=profile, has_traffic_filtering=True,
            vif_name=binding.device_name(binding.TAP_PREFIX, port.port_id),
            bridge_name=port.names.qbr)

    def instance(self, port):
        return self._objects.instance_info.InstanceInfo(
            uuid=port.instance_uuid, name='bench-' + port.instance_uuid[:8])

    def plug(self, vif, instance):
        self._os_vif.plug(vif, instance)

    def unplug(self, vif, instance):
        self._os_vif.unplug(vif, instance)


class Benchmark:

    def __init__(self, args):
        self.args = args
        self.conf = vifagent_conf.CONF
        self.bridge = None
        self.network_id = str(uuid.uuid4())
        self.osvif = None
        self.switch = None
        self.engine = None
        self.ipr = None
        self.privsep_mode = None
        self.phases = Phases()
        # Every port id this run generated: cleanup removes their devices.
        self.ids = set()
        self.rounds = []
        self.breakdown = []
        self.writes = {}
        self._patched = []

    # -- setup and cleanup --------------------------------------------------
    def setup(self):
        args, conf = self.args, self.conf
        conf([], project='vifagent')
        if not args.skip_osvif:
            # First: os-vif's privsep daemon forks this process.
            self.osvif = OsVif(conf, args.ovsdb, self.network_id)
        self.ipr = IPRoute()
        self.switch = Switch(args.ovsdb)
        while True:
            bridge = 'br-b%06x' % random.getrandbits(24)
            if not self.switch.bridge_exists(bridge) and \
                    not self.ipr.link_lookup(ifname=bridge):
                break
        self.bridge = bridge
        if self.osvif is not None:
            self.osvif.connect(self.new_ports(1)[0], bridge)
        conf.set_override('ovsdb_connection', args.ovsdb, 'ovs')
        conf.set_override('integration_bridge', bridge, 'ovs')
        conf.set_override('datapath_type', DATAPATH, 'ovs')
        self._start_privsep()
        log('bridge %s (datapath %s)', bridge, DATAPATH)
        self.engine = apply.Engine.from_conf(conf)
        self._check_ovsdb_clients()
        self._instrument()

    def _check_ovsdb_clients(self):
        """Each tool must talk to OVSDB on a connection of its own."""
        vifagent = self.engine.ovs.api.ovsdb_connection
        if vifagent is self.switch.api.ovsdb_connection:
            raise BenchmarkError('vifagent uses the benchmark\'s OVSDB '
                                 'connection')
        if self.osvif is not None:
            theirs = self.osvif.connection()
            if theirs is None or theirs is vifagent:
                raise BenchmarkError(
                    'os-vif has no OVSDB connection of its own: %r' % theirs)

    def _start_privsep(self):
        privileged.configure(self.conf)
        if self.args.privsep_in_process:
            privileged.run_in_process()
            self.privsep_mode = 'in process (--privsep-in-process)'
            return
        try:
            # An empty batch: one round trip, starting the daemon.
            priv_linux.apply_link_ops({}, [])
            self.privsep_mode = 'privsep daemon (%s)' % os.path.basename(
                self.conf.vifagent_privileged.helper_command.split()[0])
        except Exception as e:
            print('NOTE: the vifagent privsep daemon did not work, so this '
                  'run executes vifagent\'s privileged entrypoints in '
                  'process. What failed: %s: %s' % (type(e).__name__, e),
                  file=sys.stderr)
            traceback.print_exc()
            privileged.run_in_process()
            self.privsep_mode = 'in process (the daemon failed: %s)' % (
                type(e).__name__)

    def _instrument(self):
        engine, wrap = self.engine, self.phases.wrap
        for obj, attr, label in ((engine.linux, 'observe', OBSERVE_LINKS),
                                 (engine.ovs, 'observe', OBSERVE_OVS),
                                 (engine.linux, 'apply', LINK_WRITES),
                                 (engine.ovs, 'apply', OVSDB_TXN),
                                 (engine, '_verify', VERIFY_WAIT)):
            setattr(obj, attr, wrap(label, getattr(obj, attr)))
        for name in ('plan_plug', 'plan_unplug'):
            func = getattr(plan_mod, name)
            self._patched.append((plan_mod, name, func))
            setattr(plan_mod, name, wrap(PLAN, func))

    def cleanup(self):
        """Remove the bridge and every device of ours; True when clean."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean = True
        for module, name, func in self._patched:
            setattr(module, name, func)
        if self.switch is not None and self.bridge is not None:
            try:
                # The bridge's ports go with it.
                self.switch.delete_bridge(self.bridge)
                log('cleanup: bridge %s deleted', self.bridge)
            except Exception as e:
                clean = False
                log('cleanup: could not delete bridge %s: %s', self.bridge,
                    e)
        clean = self._delete_leftover_links() and clean
        stops = [('vifagent engine', self.engine),
                 ('os-vif privsep', self.osvif),
                 ('our OVSDB connection', self.switch)]
        for what, obj in stops:
            if obj is None:
                continue
            try:
                obj.stop()
            except Exception as e:
                log('cleanup: stopping %s: %s', what, e)
        for context in privileged.CONTEXTS:
            try:
                context.stop()
            except Exception as e:
                log('cleanup: stopping a vifagent privsep daemon: %s', e)
        if self.ipr is not None:
            self.ipr.close()
        return clean

    def _delete_leftover_links(self):
        # Only names derived from port ids this run generated (and checked
        # to be free) can be here: whatever exists of them is ours.
        names = set()
        for pid in self.ids:
            devices = binding.device_names(pid)
            names.update((devices.qbr, devices.qvb, devices.qvo))
        clean = True
        try:
            ipr = self.ipr if self.ipr is not None else IPRoute()
            left = [msg.get('IFLA_IFNAME') for msg in ipr.link('dump')
                    if msg.get('IFLA_IFNAME') in names]
            # veths first: deleting one end deletes its peer.
            left.sort(key=lambda n: not n.startswith(
                (binding.BRIDGE_VETH_PREFIX, binding.OVS_VETH_PREFIX)))
            for name in left:
                try:
                    ipr.link('del', ifname=name)
                except nl_exc.NetlinkError as e:
                    if e.code != errno.ENODEV:
                        clean = False
                        log('cleanup: could not delete %s: %s', name, e)
            if left:
                log('cleanup: deleted %d leftover devices', len(left))
        except Exception as e:
            clean = False
            log('cleanup: could not list or delete devices: %s', e)
        return clean

    # -- helpers ------------------------------------------------------------
    def new_ports(self, count):
        """Fresh ports whose device names nothing on the host uses."""
        taken = {msg.get('IFLA_IFNAME') for msg in self.ipr.link('dump')}
        taken.update(self.switch.ports())
        ports = []
        while len(ports) < count:
            pid = str(uuid.uuid4())
            names = binding.device_names(pid)
            if {names.qbr, names.qvb, names.qvo} & taken:
                continue
            self.ids.add(pid)
            mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(
                random.getrandbits(8) for _ in range(3))
            ports.append(BenchPort(pid, mac, str(uuid.uuid4())))
        return ports

    def desired(self, port):
        b = binding.Binding.from_dict({
            'port_id': port.port_id,
            'mac_address': port.mac,
            'instance_uuid': port.instance_uuid,
            'network_id': self.network_id,
            'mtu': MTU,
        })
        return state.DesiredPort.for_binding(b, vlan=VLAN)

    def _wait_for(self, find_problems, ports, what):
        wait_for(self.ipr, self.switch, find_problems, ports, what)

    def check_chains(self, ports, what):
        def problems(ports, links, ovs_ports):
            return chain_problems(ports, self.bridge, links, ovs_ports)
        self._wait_for(problems, ports, what)

    def check_gone(self, ports, what):
        self._wait_for(leftover_problems, ports, what)

    def counters(self):
        return dataclasses.asdict(self.engine.counters)

    def _record(self, scenario, total, before, breakdown):
        times, calls = self.phases.take(total)
        breakdown[scenario] = times
        if scenario not in self.writes:
            after = self.counters()
            writes = {k: after[k] - before[k] for k in after}
            writes['privsep round trips'] = calls[LINK_WRITES]
            self.writes[scenario] = writes

    # -- scenarios ----------------------------------------------------------
    def warm_up(self):
        """Start daemons and connections outside the measurement."""
        log('warm-up: one port with each tool')
        port = self.new_ports(1)[0]
        pid = port.port_id
        expect_status(self.engine.plug([self.desired(port)]), [port],
                      state.DOWN, 'warm-up vifagent plug')
        self.check_chains([port], 'warm-up vifagent plug')
        expect_status(self.engine.unplug([pid]), [port], None,
                      'warm-up vifagent unplug')
        self.check_gone([port], 'warm-up vifagent unplug')
        if self.osvif is not None:
            port = self.new_ports(1)[0]
            vif = self.osvif.vif(port, self.bridge)
            instance = self.osvif.instance(port)
            self.osvif.plug(vif, instance)
            self.check_chains([port], 'warm-up os-vif plug')
            self.osvif.unplug(vif, instance)
            self.check_gone([port], 'warm-up os-vif unplug')
        self.phases.reset()

    def run_round(self, number):
        n = self.args.ports
        result = {}
        breakdown = {}
        engine = self.engine
        tag = 'round %d/%d' % (number, self.args.repeat)

        # 1. vifagent, one call per port.
        ports = self.new_ports(n)
        desired = [self.desired(p) for p in ports]
        log('%s: vifagent single plug of %d ports', tag, n)
        before = self.counters()
        latencies = []
        for port, want in zip(ports, desired):
            start = time.perf_counter()
            res = engine.plug([want])
            latencies.append(time.perf_counter() - start)
            expect_status(res, [port], state.DOWN, 'vifagent single plug')
        self._record('single plug', sum(latencies), before, breakdown)
        result['va_single_plug_pp'] = statistics.median(latencies)
        result['va_single_plug_total'] = sum(latencies)
        self.check_chains(ports, 'vifagent single plug')

        log('%s: vifagent single unplug', tag)
        before = self.counters()
        latencies = []
        for port in ports:
            start = time.perf_counter()
            res = engine.unplug([port.port_id])
            latencies.append(time.perf_counter() - start)
            expect_status(res, [port], None, 'vifagent single unplug')
        self._record('single unplug', sum(latencies), before, breakdown)
        result['va_single_unplug_pp'] = statistics.median(latencies)
        result['va_single_unplug_total'] = sum(latencies)
        self.check_gone(ports, 'vifagent single unplug')

        # 2. vifagent, one call for all ports.
        ports = self.new_ports(n)
        desired = [self.desired(p) for p in ports]
        ids = [p.port_id for p in ports]
        log('%s: vifagent batch plug of %d ports', tag, n)
        before = self.counters()
        start = time.perf_counter()
        res = engine.plug(desired)
        elapsed = time.perf_counter() - start
        expect_status(res, ports, state.DOWN, 'vifagent batch plug')
        self._record('batch plug', elapsed, before, breakdown)
        result['va_batch_plug_total'] = elapsed
        result['va_batch_plug_pp'] = elapsed / n
        self.check_chains(ports, 'vifagent batch plug')

        before = self.counters()
        start = time.perf_counter()
        res = engine.plug(desired)
        elapsed = time.perf_counter() - start
        expect_status(res, ports, state.DOWN, 'vifagent batch replug')
        after = self.counters()
        if after != before:
            raise BenchmarkError(
                'vifagent batch replug of healthy ports wrote: %s' %
                {k: after[k] - before[k] for k in after
                 if after[k] != before[k]})
        self._record('batch replug', elapsed, before, breakdown)
        result['va_batch_replug_total'] = elapsed

        log('%s: vifagent batch unplug', tag)
        before = self.counters()
        start = time.perf_counter()
        res = engine.unplug(ids)
        elapsed = time.perf_counter() - start
        expect_status(res, ports, None, 'vifagent batch unplug')
        self._record('batch unplug', elapsed, before, breakdown)
        result['va_batch_unplug_total'] = elapsed
        result['va_batch_unplug_pp'] = elapsed / n
        self.check_gone(ports, 'vifagent batch unplug')

        # 3. os-vif, one call per port (it has no other way).
        if self.osvif is not None:
            self._run_osvif(tag, result)
        self.rounds.append(result)
        self.breakdown.append(breakdown)

    def _run_osvif(self, tag, result):
        n = self.args.ports
        osvif = self.osvif
        ports = self.new_ports(n)
        vifs = [(osvif.vif(p, self.bridge), osvif.instance(p))
                for p in ports]
        log('%s: os-vif plug of %d ports', tag, n)
        latencies = []
        for vif, instance in vifs:
            start = time.perf_counter()
            osvif.plug(vif, instance)
            latencies.append(time.perf_counter() - start)
        result['osvif_plug_pp'] = statistics.median(latencies)
        result['osvif_plug_total'] = sum(latencies)
        self.check_chains(ports, 'os-vif plug')

        log('%s: os-vif unplug', tag)
        latencies = []
        for vif, instance in vifs:
            start = time.perf_counter()
            osvif.unplug(vif, instance)
            latencies.append(time.perf_counter() - start)
        result['osvif_unplug_pp'] = statistics.median(latencies)
        result['osvif_unplug_total'] = sum(latencies)
        self.check_gone(ports, 'os-vif unplug')

    def profile_round(self):
        """One more vifagent round under cProfile, printed to stderr.

        Privileged work runs in the privsep daemon and shows up here as
        time waiting on its socket; the phase table splits it out.
        """
        n = self.args.ports
        engine = self.engine
        ports = self.new_ports(n)
        desired = [self.desired(p) for p in ports]
        sections = []

        def profiled(title, func):
            profile = cProfile.Profile()
            profile.enable()
            try:
                return func()
            finally:
                profile.disable()
                sections.append((title, profile))

        log('profile: vifagent single plug/unplug and batch plug/unplug')
        profiled('vifagent single plug (%d calls)' % n,
                 lambda: [engine.plug([d]) for d in desired])
        profiled('vifagent single unplug (%d calls)' % n,
                 lambda: [engine.unplug([p.port_id]) for p in ports])
        self.check_gone(ports, 'profiled single unplug')
        ports = self.new_ports(n)
        desired = [self.desired(p) for p in ports]
        res = profiled('vifagent batch plug', lambda: engine.plug(desired))
        expect_status(res, ports, state.DOWN, 'profiled batch plug')
        res = profiled('vifagent batch unplug',
                       lambda: engine.unplug([p.port_id for p in ports]))
        expect_status(res, ports, None, 'profiled batch unplug')
        self.phases.reset()
        for title, profile in sections:
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats('cumulative').print_stats(25)
            print('--- cProfile: %s ---\n%s' % (title, out.getvalue()),
                  file=sys.stderr)

    # -- report -------------------------------------------------------------
    def _median(self, key):
        values = [r[key] for r in self.rounds if key in r]
        return statistics.median(values) if values else None

    def report(self):
        args = self.args
        out = []
        out.append('vifagent plug benchmark: %d ports x %d rounds on %s '
                   '(datapath %s, Open vSwitch %s, kernel %s)' %
                   (args.ports, len(self.rounds), self.bridge, DATAPATH,
                    self.switch.version(), platform.release()))
        out.append('vifagent privileged ops: %s; os-vif: %s' % (
            self.privsep_mode,
            'skipped' if self.osvif is None else
            '%s, ovs plugin, native OVSDB, privsep fork daemon' %
            self.osvif.version))
        out.append('')
        out.append('%-36s %12s %12s %12s' % ('metric (median over rounds)',
                                             'median ms', 'min ms',
                                             'max ms'))
        for label, key in ROWS:
            values = [r[key] for r in self.rounds if key in r]
            if not values:
                continue
            out.append('%-36s %12.2f %12.2f %12.2f' % (
                label, statistics.median(values) * 1000,
                min(values) * 1000, max(values) * 1000))
        out.append('')
        out.append('vifagent engine phases, ms (median over rounds; single '
                   'rows are the sum of %d calls)' % args.ports)
        heads = ('single', 'single', 'batch', 'batch', 'batch')
        subs = ('plug', 'unplug', 'plug', 'replug', 'unplug')
        out.append('%-27s' % '' + ''.join('%10s' % h for h in heads))
        out.append('%-27s' % 'phase' + ''.join('%10s' % s for s in subs))
        for phase in PHASES + ('total',):
            cells = []
            for scenario in SCENARIOS:
                values = [
                    (sum(b[scenario].values()) if phase == 'total'
                     else b[scenario][phase])
                    for b in self.breakdown if scenario in b]
                cells.append('%10.1f' % (statistics.median(values) * 1000)
                             if values else '%10s' % '-')
            out.append('%-27s' % phase + ''.join(cells))
        out.append('')
        out.append('vifagent writes (first round)')
        out.append('%-27s' % '' + ''.join('%10s' % h for h in heads))
        out.append('%-27s' % 'write' + ''.join('%10s' % s for s in subs))
        keys = ('link_ops', 'link_deletes', 'ovsdb_transactions',
                'privsep round trips')
        for key in keys:
            out.append('%-27s' % key.replace('_', ' ') + ''.join(
                '%10d' % self.writes[s][key] if s in self.writes
                else '%10s' % '-' for s in SCENARIOS))
        out.append('')
        out.extend(self._ratios())
        print('\n'.join(out))
        sys.stdout.flush()

    def _ratios(self):
        def ratio(osvif_key, vifagent_key):
            a, b = self._median(osvif_key), self._median(vifagent_key)
            if a is None or b is None or b <= 0:
                return None
            return a / b

        def fmt(value):
            return 'n/a' if value is None else '%.2f' % value

        single = ratio('osvif_plug_pp', 'va_single_plug_pp')
        single_unplug = ratio('osvif_unplug_pp', 'va_single_unplug_pp')
        unplug = ratio('osvif_unplug_total', 'va_batch_unplug_total')
        plug = ratio('osvif_plug_total', 'va_batch_plug_total')
        lines = []
        if plug is None:
            lines.append('os-vif skipped: no ratios')
        else:
            targets = (
                ('batch plug >= 20x faster than os-vif', plug, 20.0),
                ('single plug no slower than os-vif', single, 1.0),
                ('batch unplug >= 3x faster than os-vif', unplug, 3.0),
            )
            for text, value, goal in targets:
                lines.append('target: %-40s %s (%.2fx)' % (
                    text, 'met' if value >= goal else 'MISSED', value))
        lines.append('single_plug_ratio_vs_osvif=%s' % fmt(single))
        lines.append('single_unplug_ratio_vs_osvif=%s' % fmt(single_unplug))
        lines.append('unplug_ratio_vs_osvif=%s' % fmt(unplug))
        # Kept last: tools read the final line.
        lines.append('plug_ratio_vs_osvif=%s' % fmt(plug))
        return lines


def log(msg, *args):
    print(msg % args if args else msg, file=sys.stderr, flush=True)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.plug',
        description='Time vifagent plug/unplug (one port per call and all '
                    'in one call) against os-vif\'s hybrid plug, on a fresh '
                    'OVS bridge that is removed at the end. Run as root.')
    parser.add_argument('--ports', type=positive, default=200,
                        help='ports per scenario and round (default 200)')
    parser.add_argument('--repeat', type=positive, default=3,
                        help='rounds, each with fresh port ids (default 3)')
    parser.add_argument('--skip-osvif', action='store_true',
                        help='measure vifagent only (quick runs)')
    parser.add_argument('--ovsdb', default='tcp:127.0.0.1:6640',
                        help='OVSDB server for both tools '
                             '(default tcp:127.0.0.1:6640)')
    parser.add_argument('--privsep-in-process', action='store_true',
                        help='run vifagent\'s privileged operations in this '
                             'process instead of its privsep daemon, to '
                             'see what the daemon costs')
    parser.add_argument('--profile', action='store_true',
                        help='after the rounds, run one more vifagent round '
                             'under cProfile and print the top functions '
                             'to stderr (not counted in the table)')
    return parser.parse_args(argv)


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        log('error: run as root (the benchmark creates network devices)')
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    bench = Benchmark(args)
    status = 0
    try:
        bench.setup()
        bench.warm_up()
        for number in range(1, args.repeat + 1):
            bench.run_round(number)
        if args.profile:
            bench.profile_round()
    except BenchmarkError as e:
        log('ABORTED: %s', e)
        status = 1
    except KeyboardInterrupt:
        log('interrupted')
        status = 130
    except Exception:
        log('ABORTED by an unexpected error:')
        traceback.print_exc()
        status = 1
    finally:
        if not bench.cleanup():
            log('cleanup was incomplete: see the messages above')
            status = status or 3
    if status == 0:
        bench.report()
    return status


if __name__ == '__main__':
    sys.exit(main())
