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

"""RPC benchmark: a real vifagent-agent process, driven over RabbitMQ.

Run from the top of the repository, as root, on a host where Open vSwitch
and RabbitMQ are running::

    python -m benchmarks.rpc --ports 200 --repeat 3

The benchmark writes a configuration of its own and starts the
``vifagent-agent`` console script installed beside this interpreter. Every
name is fresh: host ``bench-<hex>``, RPC topic and control exchange
``vifagent-bench-<hex>``, integration bridge ``br-<hex>`` (userspace
datapath), a state directory in a temporary directory and, with
``--netns``, namespaces ``vifagent-bench-<hex>-<n>``. When it ends, on
failure and Ctrl-C too, it stops the agent and removes the bridge, every
device of the ports it generated, its namespaces, its broker queues and
exchanges and the temporary directory. Nothing else on the host is
touched, so it can run beside other tests.

Every round uses fresh port ids:

1. ``bind_port``, one call per port, each timed from sending the call to
   receiving the reply; each reply must say DOWN (``ovs_hybrid`` ports, no
   VM tap) or, with ``--netns``, ACTIVE (a namespace per port stands in
   for the VM). Then ``unbind_port`` per port, timed the same way.
2. ``sync_ports`` with as many new bindings in one call (every port in the
   reply DOWN or ACTIVE as above), then ``sync_ports([])``, which removes
   them all; each timed until its reply.

Outside the timed calls every chain is also checked independently, over
netlink and OVSDB, after each bind and sync and again after each removal.

The table shows, per metric, the median over the rounds with the minimum
and maximum; a latency percentile is taken over the round's calls (nearest
rank). Then come the targets and, last, ``bind_median_ms``, ``bind_p99_ms``
and ``sync_<ports>_s``.
"""

import argparse
import os
import platform
import statistics
import sys
import time

from benchmarks import _common as common
from benchmarks._common import BenchmarkError
from benchmarks._common import log
from benchmarks._common import percentile

# Targets from the issue: bind_port median, and one sync_ports of this
# many new bindings.
BIND_TARGET_MS = 25.0
SYNC_TARGET_S = 2.0
SYNC_TARGET_PORTS = 200

# (label, key, unit): the rows of the result table.
ROWS = (
    ('bind_port latency, median', 'bind_median', 'ms'),
    ('bind_port latency, p90', 'bind_p90', 'ms'),
    ('bind_port latency, p99', 'bind_p99', 'ms'),
    ('bind_port latency, max', 'bind_max', 'ms'),
    ('bind_port median, first %(q)d calls', 'bind_first', 'ms'),
    ('bind_port median, last %(q)d calls', 'bind_last', 'ms'),
    ('bind_port, all calls (total)', 'bind_total', 's'),
    ('unbind_port latency, median', 'unbind_median', 'ms'),
    ('unbind_port latency, p99', 'unbind_p99', 'ms'),
    ('sync_ports, %(n)d new (total)', 'sync', 's'),
    ('sync_ports, %(n)d new (per port)', 'sync_pp', 'ms'),
    ('sync_ports([]), removing %(n)d', 'sync_remove', 's'),
)
_SCALE = {'ms': 1000.0, 's': 1.0}


class Benchmark(common.AgentBenchmark):

    def __init__(self, args):
        super().__init__(args)
        self.rounds = []

    def run(self):
        self.warm_up()
        for number in range(1, self.args.repeat + 1):
            self.run_round(number)

    def expect_empty(self, what):
        ports = self.client.get_agent_state()['ports']
        if ports:
            raise BenchmarkError('%s: the agent still has %d ports' % (
                what, ports))

    @property
    def quarter(self):
        """How many calls the first and last quarter rows cover."""
        return max(1, self.args.ports // 4)

    # -- scenarios ----------------------------------------------------------
    def warm_up(self):
        """One bind, unbind and sync outside the measurement.

        The agent starts its privsep daemons on its first kernel write and
        the client sets up its reply queue on its first call.
        """
        log('warm-up: bind, unbind and sync of one port')
        client = self.client
        port = self.new_ports(1)[0]
        self.expect_reply(client.bind_port(self.binding(port)), port,
                          'warm-up bind_port')
        client.unbind_port(port.port_id)
        port = self.new_ports(1)[0]
        client.sync_ports([self.binding(port)])
        client.sync_ports([])
        self.check_gone([port], 'warm-up')
        self._delete_namespaces(self.namespaces)
        self.expect_empty('warm-up')

    def run_round(self, number):
        n = self.args.ports
        client = self.client
        result = {}
        tag = 'round %d/%d' % (number, self.args.repeat)

        # 1. One call per port.
        ports = self.new_ports(n)
        bindings = [self.binding(p) for p in ports]
        log('%s: bind_port x %d', tag, n)
        latencies = []
        for port, data in zip(ports, bindings):
            start = time.perf_counter()
            reply = client.bind_port(data)
            latencies.append(time.perf_counter() - start)
            self.expect_reply(reply, port, 'bind_port')
        result['bind_median'] = statistics.median(latencies)
        result['bind_p90'] = percentile(latencies, 90)
        result['bind_p99'] = percentile(latencies, 99)
        result['bind_max'] = max(latencies)
        # Each bind adds a port to the bridge: does latency grow with it?
        quarter = self.quarter
        result['bind_first'] = statistics.median(latencies[:quarter])
        result['bind_last'] = statistics.median(latencies[-quarter:])
        result['bind_total'] = sum(latencies)
        self.check_chains(ports, 'bind_port')

        log('%s: unbind_port x %d', tag, n)
        latencies = []
        for port in ports:
            start = time.perf_counter()
            reply = client.unbind_port(port.port_id)
            latencies.append(time.perf_counter() - start)
            if not reply.get('was_bound') or reply.get('left_behind'):
                raise BenchmarkError('unbind_port %s: %r' % (
                    port.port_id, reply))
        result['unbind_median'] = statistics.median(latencies)
        result['unbind_p99'] = percentile(latencies, 99)
        self.check_gone(ports, 'unbind_port')
        self.expect_empty('unbind_port')
        self._delete_namespaces({p.netns for p in ports if p.netns})

        # 2. All ports in one call, then none.
        ports = self.new_ports(n)
        bindings = [self.binding(p) for p in ports]
        ids = [p.port_id for p in ports]
        log('%s: sync_ports of %d new bindings', tag, n)
        start = time.perf_counter()
        reply = client.sync_ports(bindings)
        elapsed = time.perf_counter() - start
        if sorted(reply['added']) != sorted(ids) or reply['removed']:
            raise BenchmarkError(
                'sync_ports: added %d of %d, removed %d' % (
                    len(reply['added']), n, len(reply['removed'])))
        replies = {r['port_id']: r for r in reply['ports']}
        for port in ports:
            self.expect_reply(replies.get(port.port_id), port, 'sync_ports')
        result['sync'] = elapsed
        result['sync_pp'] = elapsed / n
        self.check_chains(ports, 'sync_ports')

        log('%s: sync_ports([])', tag)
        start = time.perf_counter()
        reply = client.sync_ports([])
        elapsed = time.perf_counter() - start
        if sorted(reply['removed']) != sorted(ids) or reply['ports']:
            raise BenchmarkError('sync_ports([]): removed %d of %d' % (
                len(reply['removed']), n))
        result['sync_remove'] = elapsed
        self.check_gone(ports, 'sync_ports([])')
        self.expect_empty('sync_ports([])')
        self._delete_namespaces({p.netns for p in ports if p.netns})

        log('%s: bind median %.1f ms, p99 %.1f ms; sync %.2f s',
            tag, result['bind_median'] * 1000, result['bind_p99'] * 1000,
            result['sync'])
        self.rounds.append(result)

    # -- report -------------------------------------------------------------
    def _median(self, key):
        return statistics.median(r[key] for r in self.rounds)

    def report(self):
        args = self.args
        n = args.ports
        host = self.broker()
        out = []
        out.append('vifagent RPC benchmark: %d ports x %d rounds, %s ports '
                   '(expected %s), agent %s on %s' % (
                       n, len(self.rounds), self.vif_type, self.expected,
                       self.host, self.bridge))
        out.append('datapath %s, Open vSwitch %s, kernel %s, %d CPUs, '
                   'load average %.2f at start; RabbitMQ at %s:%s' % (
                       common.DATAPATH, self.switch.version(),
                       platform.release(), os.cpu_count(), self.loadavg[0],
                       host.hostname, host.port or 5672))
        out.append('agent answered %.1f s after start%s' % (
            self.started_in, '; debug logging ON' if args.debug else ''))
        out.append('')
        out.append('%-36s %12s %12s %12s' % ('metric (median over rounds)',
                                             'median', 'min', 'max'))
        for label, key, unit in ROWS:
            values = [r[key] * _SCALE[unit] for r in self.rounds]
            out.append('%-36s %9.2f %-2s %9.2f %-2s %9.2f %-2s' % (
                label % {'n': n, 'q': self.quarter},
                statistics.median(values), unit,
                min(values), unit, max(values), unit))
        out.append('')
        bind_ms = self._median('bind_median') * 1000
        p99_ms = self._median('bind_p99') * 1000
        sync_s = self._median('sync')
        out.append('target: %-40s %s (%.2f ms)' % (
            'bind_port median < %g ms' % BIND_TARGET_MS,
            'met' if bind_ms < BIND_TARGET_MS else 'MISSED', bind_ms))
        text = 'sync_ports of %d < %g s' % (SYNC_TARGET_PORTS,
                                            SYNC_TARGET_S)
        if n == SYNC_TARGET_PORTS:
            out.append('target: %-40s %s (%.2f s)' % (
                text, 'met' if sync_s < SYNC_TARGET_S else 'MISSED',
                sync_s))
        else:
            out.append('target: %-40s not measured (--ports %d)' % (text, n))
        out.append('bind_median_ms=%.2f' % bind_ms)
        out.append('bind_p99_ms=%.2f' % p99_ms)
        out.append('sync_%d_s=%.3f' % (n, sync_s))
        print('\n'.join(out))
        sys.stdout.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.rpc',
        description='Time a real vifagent-agent over RabbitMQ: bind_port '
                    'one port per call and sync_ports of all ports in one '
                    'call, on a fresh OVS bridge that is removed at the '
                    'end. Run as root.')
    parser.add_argument('--ports', type=common.positive, default=200,
                        help='ports per scenario and round (default 200)')
    parser.add_argument('--repeat', type=common.positive, default=3,
                        help='rounds, each with fresh port ids (default 3)')
    parser.add_argument('--netns', action='store_true',
                        help='bind netns ports, each with a namespace of '
                             'its own as its VM (status ACTIVE), instead '
                             'of ovs_hybrid ports without a tap (DOWN)')
    common.add_agent_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    return common.main(Benchmark(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
