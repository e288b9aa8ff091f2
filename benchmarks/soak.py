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

"""Soak: binds, unbinds, drift and VM churn for minutes; does anything leak?

One ``vifagent-agent`` of its own (netns ports, a full pass every minute,
a heartbeat every 5 s, metrics on) is driven without a pause, one action
at a time, each checked before the next:

* bind a new port (its namespace made first) or unbind one (its namespace
  deleted after), keeping between ``--pool``/2 and ``--pool`` ports;
* drift, repaired by the agent alone: delete a qvb (its qvo goes with
  it), set one of qbr, qvb, qvo or the tap down, remove the OVS port;
* VM churn: a port's namespace deleted (its tap goes with it; the port
  must leave ACTIVE) and made again (ACTIVE, wired anew);
* a ``sync_ports`` of the current set (no change expected), and a scrape
  of ``/healthz`` and ``/metrics``.

Every ``--interval`` seconds it samples the agent process's open file
descriptors, threads and resident memory (and, for information, those of
its privsep daemons, and the links and OVS ports of the whole host: the
agent observes and replicates all of them, so its memory follows what
other work on a shared host creates). At the end it prints each action's
count and recovery time, and each figure's least-squares slope per hour
over the whole run and over its second half. A figure *grows without
bound* when, over the second half, its slope is above the threshold (fds
10/h, threads 5/h, RSS 20 MB/h) and the highest value of the last quarter
is above the highest value of the first half by more than a margin (fds
2, threads 1, RSS 4 MB): a figure that climbs while warming up and then
levels off passes, one that keeps setting new highs fails. The exit
status is 1 then, or on any wrong result; 0 otherwise::

    nice python -m benchmarks.soak --minutes 30
"""

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log

#: name: (unit, second-half slope threshold per hour, margin).
LIMITS = {'fds': ('', 10.0, 2), 'threads': ('', 5.0, 1),
          'rss_mb': ('MB', 20.0, 4.0)}
HELPER_FIGURES = ('helper_fds', 'helper_threads', 'helper_rss_mb')
#: What the agent's memory follows on a shared host: every link and every
#: OVS port of the host is in its observations and its OVSDB replica.
HOST_FIGURES = ('host_links', 'host_ovs_ports')
#: Seconds for a status change to show in get_port, and for a repair, a
#: retry or a removal to show on the host. Long: on a shared host other
#: work may load ovs-vswitchd for minutes (with hundreds of ports on the
#: userspace datapath each reconfiguration takes seconds), OVSDB
#: transactions then time out, and the agent retries with backoff and
#: again at the next full pass, which is what it must do, not a failure.
#: What takes longer than this is one.
STATUS_TIMEOUT = CHECK_TIMEOUT = 300.0
#: Actions and their weights.
ACTIONS = (('bind', 4), ('unbind', 4), ('drift_qvb', 2), ('drift_down', 2),
           ('drift_ovs', 2), ('vm_churn', 2), ('sync', 1), ('scrape', 1))
_IFF_UP = 1
_PAGE = os.sysconf('SC_PAGE_SIZE')


def process_figures(pid):
    """``(fds, threads, rss in MB)`` of process ``pid``, None if gone."""
    try:
        fds = len(os.listdir('/proc/%d/fd' % pid))
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        # Fields after the command: state is 3rd, threads 20th, rss 24th.
        return fds, int(fields[17]), int(fields[21]) * _PAGE / 1e6
    except (OSError, IndexError, ValueError):
        return None


def slope(points):
    """Least-squares slope of ``[(x, y)]``; 0.0 with fewer than 2 x."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    return (sum((x - mx) * (y - my) for x, y in points) /
            sum((x - mx) ** 2 for x, _ in points))


def unbounded(series, threshold, margin):
    """Whether ``[(hours, value)]`` keeps growing (see the module doc).

    Returns ``(verdict, second-half slope per hour)``.
    """
    half = series[len(series) // 2:]
    rate = slope(half)
    if len(series) < 8:
        return False, rate
    first_half_max = max(v for _, v in series[:len(series) // 2])
    last_quarter_max = max(v for _, v in series[3 * len(series) // 4:])
    return (rate > threshold and
            last_quarter_max > first_half_max + margin), rate


class Sampler:
    """Samples the agent and its privsep daemons every ``interval`` s."""

    def __init__(self, bench, interval):
        self.bench = bench
        self.interval = interval
        self.samples = []   # (seconds since start, {figure: value})
        self.error = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='sampler',
                                        daemon=True)
        self._start = None

    def start(self):
        self._start = time.monotonic()
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._thread.join(10)

    def _run(self):
        while True:
            self.sample()
            if self._stopping.wait(self.interval):
                return

    def sample(self):
        agent = process_figures(self.bench.proc.pid)
        if agent is None:
            self.error = 'the agent process is gone'
            return
        helpers = [f for f in map(process_figures, self.bench.helpers())
                   if f is not None]
        figures = dict(zip(('fds', 'threads', 'rss_mb'), agent))
        figures.update(zip(HELPER_FIGURES,
                           (sum(f[i] for f in helpers) for i in range(3))))
        figures['host_links'] = len(os.listdir('/sys/class/net'))
        figures['host_ovs_ports'] = len(self.bench.switch.rows('Port'))
        self.samples.append((time.monotonic() - self._start, figures))
        if len(self.samples) % 6 == 1:
            log('sample %d: agent fds %d, threads %d, rss %.1f MB; '
                'privsep fds %d; host links %d, OVS ports %d',
                len(self.samples), figures['fds'], figures['threads'],
                figures['rss_mb'], figures['helper_fds'],
                figures['host_links'], figures['host_ovs_ports'])

    def series(self, name):
        return [(t / 3600.0, f[name]) for t, f in self.samples]


class Benchmark(harness.AgentBench):

    check_timeout = CHECK_TIMEOUT
    agent_options = {'resync_interval': 60, 'report_interval': 5}
    # libvirt off: its VMs are namespaces, and a libvirtd restarted by a
    # test beside it must not fail its /healthz.
    sections = {'metrics': {'enabled': 'true', 'bind_port': 0,
                            'bind_host': '127.0.0.1'},
                'libvirt': {'enabled': 'false'}}

    def __init__(self, args):
        args.netns = True
        super().__init__(args)
        self.pool = []
        self.retried_binds = 0
        self.retried_unbinds = 0
        self.unhealthy = 0
        self.counts = {name: 0 for name, _ in ACTIONS}
        self.recovery = {}   # action: [seconds]
        self.sampler = None
        self.metrics_url = None
        self.leaks = []

    # -- checks -----------------------------------------------------------
    def wait_status(self, port, accept, what):
        """Poll get_port until ``accept(status)``; the seconds it took."""
        start = time.monotonic()
        while True:
            reply = self.client.get_port(port.port_id)
            if accept(reply['status']):
                return time.monotonic() - start
            if time.monotonic() - start > STATUS_TIMEOUT:
                raise BenchmarkError('%s: %s is %s (%s)' % (
                    what, port.port_id, reply['status'], reply['reason']))
            time.sleep(0.05)

    def wait_up(self, port, name, what):
        """Until device ``name`` of ``port`` is up and the chain whole."""
        def problems(ports, links, ovs_ports):
            link = links.get(name)
            if link is None or not link['flags'] & _IFF_UP:
                return ['%s: %s is not up' % (port.port_id, name)]
            return []
        self.wait_for(problems, [port], what)
        self.check_chains([port], what)

    def timed_repair(self, action, check):
        start = time.monotonic()
        check()
        self.recovery.setdefault(action, []).append(time.monotonic() - start)

    # -- actions ----------------------------------------------------------
    def do_bind(self):
        port = self.new_ports(1)[0]
        reply = self.client.bind_port(self.binding(port))
        self.pool.append(port)
        if reply.get('status') != harness.ACTIVE:
            # Not wrong in itself (OVSDB may have timed out under load):
            # the agent retries the port, and must get it ACTIVE.
            log('bind_port %s: %s (%s); waiting for a retry', port.port_id,
                reply.get('status'), reply.get('reason'))
            self.retried_binds += 1
            self.wait_status(port, lambda s: s == harness.ACTIVE,
                             'bind_port retried')
        self.check_chains([port], 'bind_port')

    def do_unbind(self):
        port = self.pool.pop(random.randrange(len(self.pool)))
        reply = self.client.unbind_port(port.port_id)
        if not reply.get('was_bound'):
            raise BenchmarkError('unbind_port %s: %r' % (
                port.port_id, reply))
        if reply.get('left_behind'):
            # Its tombstone makes the next full pass finish the removal.
            log('unbind_port %s: %s; waiting for a full pass',
                port.port_id, reply['left_behind'])
            self.retried_unbinds += 1
        self.check_gone([port], 'unbind_port')
        if not self.delete_namespaces([port.netns]):
            raise BenchmarkError('could not delete %s' % port.netns)

    def do_drift_qvb(self):
        port = random.choice(self.pool)
        harness.ip_batch('link del', [port.names.qvb])
        self.timed_repair('drift_qvb', lambda: self.check_chains(
            [port], 'qvb deleted'))

    def do_drift_down(self):
        port = random.choice(self.pool)
        names = port.names
        name = random.choice((names.qbr, names.qvb, names.qvo, names.tap))
        harness.ip_batch('link set down dev', [name])
        self.timed_repair('drift_down', lambda: self.wait_up(
            port, name, '%s set down' % name))

    def do_drift_ovs(self):
        port = random.choice(self.pool)
        subprocess.run(['ovs-vsctl', '--if-exists', 'del-port', self.bridge,
                        port.names.qvo], check=True, capture_output=True)
        self.timed_repair('drift_ovs', lambda: self.check_chains(
            [port], 'OVS port removed'))

    def do_vm_churn(self):
        port = random.choice(self.pool)
        harness.ip_batch('netns del', [port.netns])
        self.wait_status(port, lambda s: s != harness.ACTIVE,
                         'namespace deleted')
        harness.ip_batch('netns add', [port.netns])

        def back():
            self.wait_status(port, lambda s: s == harness.ACTIVE,
                             'namespace made again')
            self.check_chains([port], 'namespace made again')
        self.timed_repair('vm_churn', back)

    def do_sync(self):
        reply = self.client.sync_ports([self.binding(p) for p in self.pool])
        if reply['added'] or reply['removed']:
            raise BenchmarkError('sync_ports of the current set: added %d, '
                                 'removed %d' % (len(reply['added']),
                                                 len(reply['removed'])))
        statuses = {r['port_id']: r['status'] for r in reply['ports']}
        for port in self.pool:
            if statuses.get(port.port_id) != harness.ACTIVE:
                # A retry under way (OVSDB slow): it must converge.
                self.wait_status(port, lambda s: s == harness.ACTIVE,
                                 'sync_ports')

    def do_scrape(self):
        with urllib.request.urlopen(self.metrics_url + 'metrics',
                                    timeout=10) as r:
            r.read()
        start, waited = time.monotonic(), False
        while True:
            try:
                with urllib.request.urlopen(self.metrics_url + 'healthz',
                                            timeout=10):
                    break
            except urllib.error.HTTPError as e:
                # A full pass that failed (OVSDB slow) is tried again
                # within seconds: unhealthy for a while is not wrong.
                body = json.loads(e.read())
                if time.monotonic() - start > STATUS_TIMEOUT:
                    raise BenchmarkError('/healthz %d for %d s: %s' % (
                        e.code, STATUS_TIMEOUT, body))
                if not waited:
                    waited = True
                    self.unhealthy += 1
                    log('/healthz %d: %s; waiting', e.code, body)
                time.sleep(1)
        if waited:
            self.recovery.setdefault('unhealthy', []).append(
                time.monotonic() - start)

    # -- the run ----------------------------------------------------------
    def choose(self):
        names = [n for n, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        while True:
            action = random.choices(names, weights)[0]
            if action == 'bind' and len(self.pool) >= self.args.pool:
                continue
            if action == 'unbind' and len(self.pool) <= self.args.pool // 2:
                continue
            if action.startswith(('drift', 'vm')) and not self.pool:
                continue
            return action

    def run(self):
        args = self.args
        self.metrics_url = self.client.get_agent_state()['metrics']
        if not self.metrics_url:
            raise BenchmarkError('the agent serves no metrics')
        log('warm-up: binding %d ports', args.pool // 2 + 1)
        for _ in range(args.pool // 2 + 1):
            self.do_bind()
        self.sampler = Sampler(self, args.interval)
        self.sampler.start()
        deadline = time.monotonic() + args.minutes * 60
        last_log = time.monotonic()
        try:
            while time.monotonic() < deadline:
                if self.sampler.error:
                    raise BenchmarkError(self.sampler.error)
                action = self.choose()
                getattr(self, 'do_' + action)()
                self.counts[action] += 1
                if time.monotonic() - last_log > 60:
                    last_log = time.monotonic()
                    log('%d actions, %d ports bound, %.1f min left',
                        sum(self.counts.values()), len(self.pool),
                        (deadline - time.monotonic()) / 60)
        finally:
            self.sampler.stop()
        self.sampler.sample()
        state = self.client.get_agent_state()
        self.expect_ports(state, len(self.pool), 'at the end')
        self.check_chains(self.pool, 'at the end')
        self.leaks = [name for name, (_, threshold, margin) in LIMITS.items()
                      if unbounded(self.sampler.series(name), threshold,
                                   margin)[0]]
        if self.leaks:
            self.report()
            raise BenchmarkError('grows without bound: %s' %
                                 ', '.join(self.leaks))

    def report(self):
        if self.sampler is None or not self.sampler.samples:
            return
        samples = self.sampler.samples
        minutes = samples[-1][0] / 60
        out = ['vifagent soak: %.1f minutes, %d actions, %d samples every '
               '%d s, agent %s, pool of %d ports' % (
                   minutes, sum(self.counts.values()), len(samples),
                   self.args.interval, self.host, self.args.pool),
               self.host_line(),
               'binds not ACTIVE at once (then ACTIVE after a retry): %d; '
               'unbinds that left something for the next full pass: %d; '
               '/healthz found unhealthy (then healthy again): %d'
               % (self.retried_binds, self.retried_unbinds, self.unhealthy),
               '',
               '%-12s %7s %12s %12s' % ('action', 'count', 'recovery med',
                                        'max')]
        counts = dict(self.counts, unhealthy=self.unhealthy)
        for name in [n for n, _ in ACTIONS] + ['unhealthy']:
            times = self.recovery.get(name)
            out.append('%-12s %7d %12s %12s' % (
                name, counts[name],
                '%.3f s' % statistics.median(times) if times else '-',
                '%.3f s' % max(times) if times else '-'))
        out += ['', '%-16s %9s %9s %9s %14s %14s  %s' % (
            'figure', 'first', 'last', 'max', 'slope/h (all)',
            'slope/h (2nd)', 'verdict')]
        for name in tuple(LIMITS) + HELPER_FIGURES + HOST_FIGURES:
            series = self.sampler.series(name)
            values = [v for _, v in series]
            if name in LIMITS:
                verdict, half = unbounded(series, *LIMITS[name][1:])
                verdict = 'GROWS' if verdict else 'bounded (limit %g/h)' % (
                    LIMITS[name][1])
            else:
                half, verdict = slope(series[len(series) // 2:]), 'info'
            out.append('%-16s %9.1f %9.1f %9.1f %14.2f %14.2f  %s' % (
                name, values[0], values[-1], max(values), slope(series),
                half, verdict))
        out += ['soak_minutes=%.1f' % minutes] + [
            'slope_%s_per_h=%.2f' % (name, slope(
                self.sampler.series(name)[len(samples) // 2:]))
            for name in LIMITS]
        print('\n'.join(out))
        sys.stdout.flush()


def parse_args(argv):
    parser = harness.AgentBench.parser(sys.modules[__name__], (
        ('--minutes', 30, 'minutes of load'),
        ('--interval', 10, 'seconds between two samples'),
        ('--pool', 20, 'most ports bound at once')))
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of the random choices (default: random, '
                             'printed)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    random.seed(args.seed)
    log('seed %d', args.seed)
    return harness.main(Benchmark(args))


if __name__ == '__main__':
    sys.exit(main())
