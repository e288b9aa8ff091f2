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

Per round, with fresh ports: ``bind_port`` one call per port, each timed
to its reply, which must say DOWN (``ovs_hybrid``, no VM tap) or, with
``--netns``, ACTIVE (a namespace stands in for each VM); ``unbind_port``
per port; one ``sync_ports`` of as many new bindings; ``sync_ports([])``
removing them. Every chain is checked independently between the timed
calls. Table: per metric the median over the rounds, min and max (a
percentile is over a round's calls); then the targets and, last,
``bind_median_ms``, ``bind_p99_ms`` and ``sync_<ports>_s``::

    python -m benchmarks.rpc --ports 200 --repeat 3
"""

import statistics
import sys

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log
from benchmarks.harness import percentile
from benchmarks.harness import timed

# Targets: bind_port median, and one sync_ports of this many new bindings.
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


class Benchmark(harness.AgentBench):

    def __init__(self, args):
        super().__init__(args)
        self.rounds = []
        # The first and last quarter of the binds: does latency grow with
        # the ports on the bridge?
        self.quarter = max(1, args.ports // 4)

    def expect_empty(self, what):
        self.expect_ports(self.client.get_agent_state(), 0, what)

    def run(self):
        # The agent starts its privsep daemons on its first kernel write
        # and the client sets up its reply queue on its first call.
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
        self.delete_namespaces(self.namespaces)
        self.expect_empty('warm-up')
        for number in range(1, self.args.repeat + 1):
            self.run_round(number)

    def run_round(self, number):
        n, client, result = self.args.ports, self.client, {}
        tag = 'round %d/%d' % (number, self.args.repeat)

        # 1. One call per port.
        ports = self.new_ports(n)
        bindings = [self.binding(p) for p in ports]
        log('%s: bind_port x %d', tag, n)
        latencies = []
        for port, data in zip(ports, bindings):
            reply, seconds = timed(client.bind_port, data)
            latencies.append(seconds)
            self.expect_reply(reply, port, 'bind_port')
        result.update(
            bind_median=statistics.median(latencies),
            bind_p90=percentile(latencies, 90),
            bind_p99=percentile(latencies, 99), bind_max=max(latencies),
            bind_first=statistics.median(latencies[:self.quarter]),
            bind_last=statistics.median(latencies[-self.quarter:]),
            bind_total=sum(latencies))
        self.check_chains(ports, 'bind_port')

        log('%s: unbind_port x %d', tag, n)
        latencies = []
        for port in ports:
            reply, seconds = timed(client.unbind_port, port.port_id)
            latencies.append(seconds)
            if not reply.get('was_bound') or reply.get('left_behind'):
                raise BenchmarkError('unbind_port %s: %r' % (
                    port.port_id, reply))
        result.update(unbind_median=statistics.median(latencies),
                      unbind_p99=percentile(latencies, 99))
        self.check_gone(ports, 'unbind_port')
        self.expect_empty('unbind_port')
        self.delete_namespaces({p.netns for p in ports if p.netns})

        # 2. All ports in one call, then none.
        ports = self.new_ports(n)
        bindings = [self.binding(p) for p in ports]
        log('%s: sync_ports of %d new bindings', tag, n)
        reply, result['sync'] = timed(client.sync_ports, bindings)
        self.expect_synced(reply, ports, ports)
        result['sync_pp'] = result['sync'] / n
        self.check_chains(ports, 'sync_ports')

        log('%s: sync_ports([])', tag)
        reply, result['sync_remove'] = timed(client.sync_ports, [])
        if sorted(reply['removed']) != sorted(p.port_id for p in ports) \
                or reply['ports']:
            raise BenchmarkError('sync_ports([]): removed %d of %d' % (
                len(reply['removed']), n))
        self.check_gone(ports, 'sync_ports([])')
        self.expect_empty('sync_ports([])')
        self.delete_namespaces({p.netns for p in ports if p.netns})

        log('%s: bind median %.1f ms, p99 %.1f ms; sync %.2f s',
            tag, result['bind_median'] * 1000, result['bind_p99'] * 1000,
            result['sync'])
        self.rounds.append(result)

    def report(self):
        n = self.args.ports
        out = ['vifagent RPC benchmark: %d ports x %d rounds, %s ports '
               '(expected %s), agent %s on %s' % (
                   n, len(self.rounds), self.vif_type, self.expected,
                   self.host, self.bridge),
               self.host_line(),
               'agent answered %.1f s after start' % self.started_in,
               '', '%-36s %12s %12s %12s' % ('metric (median over rounds)',
                                             'median', 'min', 'max')]
        for label, key, unit in ROWS:
            values = [r[key] * _SCALE[unit] for r in self.rounds]
            out.append('%-36s %9.2f %-2s %9.2f %-2s %9.2f %-2s' % (
                label % {'n': n, 'q': self.quarter}, *(
                    x for v in harness.spread(values) for x in (v, unit))))
        bind_ms, p99_ms, sync_s = (
            statistics.median(r[key] for r in self.rounds) * scale
            for key, scale in (('bind_median', 1000), ('bind_p99', 1000),
                               ('sync', 1)))
        out += ['', 'target: %-40s %s (%.2f ms)' % (
            'bind_port median < %g ms' % BIND_TARGET_MS,
            'met' if bind_ms < BIND_TARGET_MS else 'MISSED', bind_ms)]
        text = 'sync_ports of %d < %g s' % (SYNC_TARGET_PORTS, SYNC_TARGET_S)
        if n == SYNC_TARGET_PORTS:
            out.append('target: %-40s %s (%.2f s)' % (
                text, 'met' if sync_s < SYNC_TARGET_S else 'MISSED', sync_s))
        else:
            out.append('target: %-40s not measured (--ports %d)' % (text, n))
        out += ['bind_median_ms=%.2f' % bind_ms, 'bind_p99_ms=%.2f' % p99_ms,
                'sync_%d_s=%.3f' % (n, sync_s)]
        print('\n'.join(out))
        sys.stdout.flush()


def parse_args(argv):
    parser = harness.AgentBench.parser(sys.modules[__name__], (
        ('--ports', 200, 'ports per scenario and round'),
        ('--repeat', 3, 'rounds, each with fresh port ids')))
    parser.add_argument('--netns', action='store_true',
                        help='bind netns ports, each with a namespace of '
                             'its own as its VM (status ACTIVE), instead '
                             'of ovs_hybrid ports without a tap (DOWN)')
    return parser.parse_args(argv)


def main(argv=None):
    return harness.main(Benchmark(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
