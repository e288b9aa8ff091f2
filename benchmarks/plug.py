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

In this process, per round and with fresh ports for each scenario: one
``Engine.plug([port])`` per port, then one ``Engine.unplug([id])`` per
port; one ``plug`` of all ports, again of the same healthy ports (which
must write nothing), one ``unplug`` of all; ``os_vif.plug`` of a
``VIFBridge`` (the ovs plugin's hybrid path) per port, then
``os_vif.unplug`` per port. Results and chains are checked after each.
Table: per metric the median over the rounds, min and max (per port: the
median latency of a round's ports); the engine's phases and writes; the
ratios against os-vif, ``plug_ratio_vs_osvif`` last::

    python -m benchmarks.plug --ports 200 --repeat 3
"""

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log
from benchmarks.harness import timed
from vifagent import binding
from vifagent import conf as vifagent_conf
from vifagent import privileged
from vifagent.privileged import linux as priv_linux
from vifagent.reconcile import apply
from vifagent.reconcile import plan as plan_mod
from vifagent import state

VLAN = 10
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
        times, calls = dict(self.times), dict(self.calls)
        times[OTHER] = total - sum(times.values())
        self.reset()
        return times, calls


def expect_status(results, ports, want, what):
    """Abort unless every port's engine result has status ``want``."""
    bad = []
    for port in ports:
        result = results.get(port.port_id)
        if result is None or result.status != want:
            bad.append('%s: %s' % (port.port_id, 'no result' if result is None
                                   else 'status %s, reason %s' % (
                                       result.status, result.reason)))
    if bad:
        raise BenchmarkError('%s: %d of %d ports are not %s; first: %s' % (
            what, len(bad), len(ports),
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

        self.objects, self.network_id = objects, network_id
        self.api_class = vif_impl_idl.NeutronOvsdbIdl
        self.plug, self.unplug = os_vif.plug, os_vif.unplug
        self.version = importlib.metadata.version('os-vif')
        # The plugin reads its options when os_vif.initialize() builds it:
        # register them first so our values are the ones it reads.
        conf.register_opts(vif_ovs.OvsPlugin.CONFIG_OPTS, group='os_vif_ovs')
        for name, value in (('ovsdb_interface', 'native'),
                            ('ovsdb_connection', ovsdb),
                            ('network_device_mtu', harness.MTU)):
            conf.set_override(name, value, 'os_vif_ovs')
        os_vif.initialize()
        # A privsep daemon forked from this root process (no sudo), before
        # anything starts threads.
        self.context = vif_privsep.vif_plug
        parent = os.getpid()
        try:
            self.context.start(priv_context.Method.FORK)
        finally:
            # The forked daemon comes back here only when it dies of an
            # exception (Ctrl-C reaches it too): it must not go on to run
            # the benchmark or its cleanup.
            if os.getpid() != parent:
                os._exit(1)

    def stop(self):
        self.context.stop()

    def args(self, port, bridge):
        # VIFBridge takes the ovs plugin down its hybrid path: qbr, the
        # qvb/qvo veth, qvo on the OVS bridge.
        objects = self.objects
        return (objects.vif.VIFBridge(
            id=port.port_id, address=port.mac, plugin='ovs',
            network=objects.network.Network(id=self.network_id,
                                            bridge=bridge, mtu=harness.MTU),
            port_profile=objects.vif.VIFPortProfileOpenVSwitch(
                interface_id=port.port_id, datapath_type=harness.DATAPATH),
            has_traffic_filtering=True, vif_name=port.names.tap,
            bridge_name=port.names.qbr),
            objects.instance_info.InstanceInfo(
                uuid=port.instance_uuid,
                name='bench-' + port.instance_uuid[:8]))


class Benchmark(harness.Bench):

    def __init__(self, args):
        super().__init__(args)
        self.conf = vifagent_conf.CONF
        self.osvif = self.engine = self.privsep_mode = None
        self.phases = Phases()
        self.rounds, self.breakdown, self.writes = [], [], {}
        self._patched = []

    def setup(self):
        args, conf = self.args, self.conf
        conf([], project='vifagent')
        if not args.skip_osvif:
            # First: os-vif's privsep daemon forks this process.
            self.osvif = OsVif(conf, args.ovsdb, self.network_id)
        super().setup()
        for name, value in (('ovsdb_connection', args.ovsdb),
                            ('integration_bridge', self.bridge),
                            ('datapath_type', harness.DATAPATH)):
            conf.set_override(name, value, 'ovs')
        privileged.configure(conf)
        if args.privsep_in_process:
            privileged.run_in_process()
            self.privsep_mode = 'in process (--privsep-in-process)'
        else:
            # An empty batch: one round trip, starting the daemon.
            priv_linux.apply_link_ops({}, [])
            self.privsep_mode = 'privsep daemon (%s)' % os.path.basename(
                conf.vifagent_privileged.helper_command.split()[0])
        log('bridge %s (datapath %s)', self.bridge, harness.DATAPATH)
        self.engine = engine = apply.Engine.from_conf(conf)
        wrap = self.phases.wrap
        for obj, attr, label in ((engine.linux, 'observe', OBSERVE_LINKS),
                                 (engine.ovs, 'observe', OBSERVE_OVS),
                                 (engine.linux, 'apply', LINK_WRITES),
                                 (engine.ovs, 'apply', OVSDB_TXN),
                                 (engine, '_verify', VERIFY_WAIT)):
            setattr(obj, attr, wrap(label, getattr(obj, attr)))
        for name in ('plan_plug', 'plan_unplug'):
            self._patched.append((name, getattr(plan_mod, name)))
            setattr(plan_mod, name, wrap(PLAN, getattr(plan_mod, name)))

    def cleanup(self):
        for name, func in self._patched:
            setattr(plan_mod, name, func)
        clean = super().cleanup()
        for obj in (self.engine, self.osvif) + privileged.CONTEXTS:
            try:
                if obj is not None:
                    obj.stop()
            except Exception as e:
                log('cleanup: stopping %s: %s', obj, e)
        return clean

    def desired(self, port):
        return state.DesiredPort.for_binding(binding.Binding.from_dict({
            'port_id': port.port_id, 'mac_address': port.mac,
            'instance_uuid': port.instance_uuid,
            'network_id': self.network_id, 'mtu': harness.MTU}), vlan=VLAN)

    def counters(self):
        return dataclasses.asdict(self.engine.counters)

    # -- scenarios --------------------------------------------------------
    def run(self):
        # Daemons and connections start outside the measurement.
        log('warm-up: one port with each tool')
        port = self.new_ports(1)[0]
        expect_status(self.engine.plug([self.desired(port)]), [port],
                      state.DOWN, 'warm-up vifagent plug')
        self.check_chains([port], 'warm-up vifagent plug')
        expect_status(self.engine.unplug([port.port_id]), [port], None,
                      'warm-up vifagent unplug')
        self.check_gone([port], 'warm-up vifagent unplug')
        if self.osvif is not None:
            port = self.new_ports(1)[0]
            self.osvif.plug(*self.osvif.args(port, self.bridge))
            self.check_chains([port], 'warm-up os-vif plug')
            self.osvif.unplug(*self.osvif.args(port, self.bridge))
            self.check_gone([port], 'warm-up os-vif unplug')
            # Each tool must talk to OVSDB on a connection of its own.
            theirs = self.osvif.api_class.__dict__.get('_ovsdb_connection')
            if theirs is None or theirs is self.engine.ovs.api.\
                    ovsdb_connection:
                raise BenchmarkError('os-vif has no OVSDB connection of its '
                                     'own: %r' % theirs)
        self.phases.reset()
        for number in range(1, self.args.repeat + 1):
            self.run_round('round %d/%d' % (number, self.args.repeat))

    def run_round(self, tag):
        n, engine = self.args.ports, self.engine
        result, breakdown = {}, {}

        def measure(scenario, calls, ports, want):
            """Time each call; keep the phases and the first writes."""
            before = self.counters()
            latencies = []
            for i, call in enumerate(calls):
                res, seconds = timed(call)
                latencies.append(seconds)
                expect_status(res, ports if len(calls) == 1 else [ports[i]],
                              want, 'vifagent ' + scenario)
            total = sum(latencies)
            breakdown[scenario], counts = self.phases.take(total)
            if scenario not in self.writes:
                after = self.counters()
                self.writes[scenario] = dict(
                    {k: after[k] - before[k] for k in after},
                    **{'privsep round trips': counts[LINK_WRITES]})
            key = 'va_' + scenario.replace(' ', '_')
            result[key + '_total'] = total
            result[key + '_pp'] = (statistics.median(latencies)
                                   if len(latencies) > 1 else total / n)
            return before

        # 1. vifagent, one call per port.
        ports = self.new_ports(n)
        log('%s: vifagent single plug of %d ports', tag, n)
        measure('single plug', [lambda d=self.desired(p): engine.plug([d])
                                for p in ports], ports, state.DOWN)
        self.check_chains(ports, 'vifagent single plug')
        log('%s: vifagent single unplug', tag)
        measure('single unplug', [lambda p=p: engine.unplug([p.port_id])
                                  for p in ports], ports, None)
        self.check_gone(ports, 'vifagent single unplug')

        # 2. vifagent, one call for all ports.
        ports = self.new_ports(n)
        desired = [self.desired(p) for p in ports]
        log('%s: vifagent batch plug of %d ports', tag, n)
        measure('batch plug', [lambda: engine.plug(desired)], ports,
                state.DOWN)
        self.check_chains(ports, 'vifagent batch plug')
        before = measure('batch replug', [lambda: engine.plug(desired)],
                         ports, state.DOWN)
        after = self.counters()
        if after != before:
            raise BenchmarkError(
                'vifagent batch replug of healthy ports wrote: %s' % {
                    k: after[k] - before[k] for k in after
                    if after[k] != before[k]})
        log('%s: vifagent batch unplug', tag)
        measure('batch unplug', [
            lambda: engine.unplug([p.port_id for p in ports])], ports, None)
        self.check_gone(ports, 'vifagent batch unplug')

        # 3. os-vif, one call per port (it has no other way).
        if self.osvif is not None:
            ports = self.new_ports(n)
            calls = [self.osvif.args(p, self.bridge) for p in ports]
            for what, call, check in (
                    ('plug', self.osvif.plug, self.check_chains),
                    ('unplug', self.osvif.unplug, self.check_gone)):
                log('%s: os-vif %s of %d ports', tag, what, n)
                latencies = [timed(call, *args)[1] for args in calls]
                result['osvif_%s_pp' % what] = statistics.median(latencies)
                result['osvif_%s_total' % what] = sum(latencies)
                check(ports, 'os-vif ' + what)
        self.rounds.append(result)
        self.breakdown.append(breakdown)

    # -- report -----------------------------------------------------------
    def report(self):
        args = self.args
        out = [
            'vifagent plug benchmark: %d ports x %d rounds on %s (datapath '
            '%s, Open vSwitch %s, kernel %s)' % (
                args.ports, len(self.rounds), self.bridge, harness.DATAPATH,
                self.switch.version(), platform.release()),
            'vifagent privileged ops: %s; os-vif: %s' % (
                self.privsep_mode, 'skipped' if self.osvif is None else
                '%s, ovs plugin, native OVSDB, privsep fork daemon' %
                self.osvif.version),
            '', '%-36s %12s %12s %12s' % ('metric (median over rounds)',
                                          'median ms', 'min ms', 'max ms')]
        for label, key in ROWS:
            values = [r[key] * 1000 for r in self.rounds if key in r]
            if values:
                out.append('%-36s %12.2f %12.2f %12.2f' % (
                    (label,) + harness.spread(values)))
        heads = '%-27s' % '' + ''.join('%10s' % s.split()[0]
                                       for s in SCENARIOS)
        subs = ''.join('%10s' % s.split()[1] for s in SCENARIOS)
        out += ['', 'vifagent engine phases, ms (median over rounds; single '
                'rows are the sum of %d calls)' % args.ports, heads,
                '%-27s' % 'phase' + subs]
        for phase in PHASES + ('total',):
            cells = []
            for scenario in SCENARIOS:
                values = [sum(b[scenario].values()) if phase == 'total'
                          else b[scenario][phase]
                          for b in self.breakdown if scenario in b]
                cells.append('%10.1f' % (statistics.median(values) * 1000)
                             if values else '%10s' % '-')
            out.append('%-27s' % phase + ''.join(cells))
        out += ['', 'vifagent writes (first round)', heads,
                '%-27s' % 'write' + subs]
        for key in ('link_ops', 'link_deletes', 'ovsdb_transactions',
                    'privsep round trips'):
            out.append('%-27s' % key.replace('_', ' ') + ''.join(
                '%10d' % self.writes[s][key] if s in self.writes
                else '%10s' % '-' for s in SCENARIOS))
        print('\n'.join(out + [''] + self._ratios()))
        sys.stdout.flush()

    def _ratios(self):
        def ratio(osvif_key, vifagent_key):
            a, b = (statistics.median(v) if v else None for v in (
                [r[k] for r in self.rounds if k in r]
                for k in (osvif_key, vifagent_key)))
            return None if a is None or b is None or b <= 0 else a / b

        single = ratio('osvif_plug_pp', 'va_single_plug_pp')
        unplug = ratio('osvif_unplug_total', 'va_batch_unplug_total')
        plug = ratio('osvif_plug_total', 'va_batch_plug_total')
        lines = ['os-vif skipped: no ratios'] if plug is None else [
            'target: %-40s %s (%.2fx)' % (
                text, 'met' if value >= goal else 'MISSED', value)
            for text, value, goal in (
                ('batch plug >= 20x faster than os-vif', plug, 20.0),
                ('single plug no slower than os-vif', single, 1.0),
                ('batch unplug >= 3x faster than os-vif', unplug, 3.0))]
        for name, value in (
                ('single_plug', single),
                ('single_unplug', ratio('osvif_unplug_pp',
                                        'va_single_unplug_pp')),
                ('unplug', unplug),
                ('plug', plug)):   # kept last: tools read the final line
            lines.append('%s_ratio_vs_osvif=%s' % (
                name, 'n/a' if value is None else '%.2f' % value))
        return lines


def parse_args(argv):
    parser = harness.make_parser(sys.modules[__name__], (
        ('--ports', 200, 'ports per scenario and round'),
        ('--repeat', 3, 'rounds, each with fresh port ids')),
        'OVSDB server for both tools')
    parser.add_argument('--skip-osvif', action='store_true',
                        help='measure vifagent only (quick runs)')
    parser.add_argument('--privsep-in-process', action='store_true',
                        help='run vifagent\'s privileged operations in this '
                             'process instead of its privsep daemon, to '
                             'see what the daemon costs')
    return parser.parse_args(argv)


def main(argv=None):
    return harness.main(Benchmark(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
