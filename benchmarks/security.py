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

"""Port security benchmark: the cost of filtering, and of a member change.

Against a ``vifagent-agent`` of its own, per round and with fresh ports:
one ``sync_ports`` of N new ports without port security, ``sync_ports([])``;
then one ``sync_ports`` of N new ports with port security and two groups
of 20 rules each (one rule matching a remote group whose members are the
N ports' addresses), checked in iptables, with the time the agent's
firewall step took (``firewall.last_apply_ms``: render, look, plan,
apply, verify); then ``--updates`` membership
changes of the remote group (one address added, then removed), each a
``sync_security_groups`` call timed to its reply and by the agent's own
clock for the apply (``firewall.last_members_ms`` in its state), and the
agent's write counters (one set written per change, no chain, no rule);
then
``sync_ports([])``. Table: medians over the rounds; last the ratio
secure/plain (target < 1.5) and the member change median (target
< 20 ms)::

    python -m benchmarks.security --ports 200 --repeat 3
"""

import statistics
import subprocess
import sys
import uuid

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log
from benchmarks.harness import timed
from vifagent import secgroup

RATIO_TARGET = 1.5
MEMBER_TARGET_MS = 20.0
RULES_PER_GROUP = 20


def group_rules(remote=None):
    """20 ingress/egress rules; with ``remote``, one matching its members."""
    rules = [{'direction': 'ingress', 'ethertype': 'IPv4',
              'protocol': 'tcp', 'port_range_min': 1000 + i,
              'port_range_max': 1000 + i} for i in range(RULES_PER_GROUP - 3)]
    rules += [{'direction': 'ingress', 'ethertype': 'IPv4',
               'protocol': 'icmp'},
              {'direction': 'egress', 'ethertype': 'IPv4'}]
    if remote:
        rules.append({'direction': 'ingress', 'ethertype': 'IPv4',
                      'protocol': 'udp', 'remote_group_id': remote})
    else:
        rules.append({'direction': 'ingress', 'ethertype': 'IPv6',
                      'protocol': 'icmpv6'})
    return rules


class Benchmark(harness.AgentBench):

    def __init__(self, args):
        super().__init__(args)
        self.rounds = []
        self.groups = []

    @staticmethod
    def address(index):
        return '10.200.%d.%d' % (index // 250, index % 250 + 1)

    def setup(self):
        super().setup()
        self.remote = str(uuid.uuid4())
        self.groups = [
            {'id': str(uuid.uuid4()), 'rules': group_rules()},
            {'id': str(uuid.uuid4()), 'rules': group_rules(self.remote)},
            {'id': self.remote, 'rules': [], 'revision': 0,
             'members': {'IPv4': []}}]

    def secure(self, port, index):
        data = self.binding(port)
        data.update(port_security_enabled=True,
                    fixed_ips=[self.address(index)],
                    security_groups=[g['id'] for g in self.groups[:2]])
        return data

    def check_filtered(self, ports):
        text = subprocess.run(['iptables-save', '-t', 'filter'],
                              capture_output=True, text=True).stdout
        missing = [p.port_id for p in ports
                   if '-A %s ' % secgroup.chain_name('i', p.port_id)
                   not in text]
        if missing:
            raise BenchmarkError('%d ports have no filter, e.g. %s' % (
                len(missing), missing[0]))

    def update_members(self, addresses):
        remote = self.groups[2]
        remote['revision'] += 1
        remote['members'] = {'IPv4': sorted(addresses)}
        return timed(self.client.sync_security_groups, self.groups)[1]

    def run(self):
        log('warm-up: bind and unbind one port with port security')
        self.client.sync_security_groups(self.groups)
        port = self.new_ports(1)[0]
        self.client.sync_ports([self.secure(port, 0)])
        self.client.sync_ports([])
        self.check_gone([port], 'warm-up')
        for number in range(1, self.args.repeat + 1):
            self.run_round(number)

    def run_round(self, number):
        n, client, result = self.args.ports, self.client, {}
        tag = 'round %d/%d' % (number, self.args.repeat)
        ports = self.new_ports(n)
        log('%s: sync_ports of %d ports without port security', tag, n)
        reply, result['plain'] = timed(client.sync_ports,
                                       [self.binding(p) for p in ports])
        self.expect_synced(reply, ports, ports)
        client.sync_ports([])
        self.check_gone(ports, 'plain')
        self.delete_namespaces({p.netns for p in ports if p.netns})

        ports = self.new_ports(n)
        addresses = [self.address(i) for i in range(n)]
        self.update_members(addresses)
        log('%s: sync_ports of %d ports with 2 groups of %d rules', tag, n,
            RULES_PER_GROUP)
        reply, result['secure'] = timed(client.sync_ports, [
            self.secure(p, i) for i, p in enumerate(ports)])
        self.expect_synced(reply, ports, ports)
        self.check_filtered(ports)
        result['firewall'] = client.get_agent_state()['firewall'][
            'last_apply_ms'] / 1000.0

        log('%s: %d membership changes of a group of %d', tag,
            self.args.updates, n)
        before = client.get_agent_state()['counters']
        times, applies = [], []
        extra = self.address(n + 10)
        for i in range(self.args.updates):
            times.append(self.update_members(
                addresses + ([extra] if i % 2 == 0 else [])))
            applies.append(client.get_agent_state()['firewall'][
                'last_members_ms'] / 1000.0)
        after = client.get_agent_state()['counters']
        sets = after['firewall_sets'] - before['firewall_sets']
        if sets != self.args.updates or \
                after['firewall_chains'] != before['firewall_chains'] or \
                after['firewall_rules'] != before['firewall_rules']:
            raise BenchmarkError('membership changes wrote %d sets, %d '
                                 'chains, %d rules' % (
                                     sets, after['firewall_chains'] -
                                     before['firewall_chains'],
                                     after['firewall_rules'] -
                                     before['firewall_rules']))
        result['member'] = statistics.median(applies)
        result['member_max'] = max(applies)
        result['member_call'] = statistics.median(times)
        client.sync_ports([])
        self.check_gone(ports, 'secure')
        self.delete_namespaces({p.netns for p in ports if p.netns})
        result['ratio'] = result['secure'] / result['plain']
        log('%s: plain %.2f s, secure %.2f s (x%.2f; firewall step %.2f '
            's), member change %.1f ms', tag, result['plain'],
            result['secure'], result['ratio'], result['firewall'],
            result['member'] * 1000)
        self.rounds.append(result)

    def report(self):
        n = self.args.ports
        rows = (('sync_ports, %d ports, no port security' % n, 'plain',
                 's', 1),
                ('sync_ports, %d ports, 2 groups x %d rules' % (
                    n, RULES_PER_GROUP), 'secure', 's', 1),
                ('  of which the firewall step (agent clock)', 'firewall',
                 's', 1),
                ('ratio secure / plain', 'ratio', 'x', 1),
                ('member change of a %d-port group: apply, median' % n,
                 'member', 'ms', 1000),
                ('member change: apply, max', 'member_max', 'ms', 1000),
                ('member change: sync_security_groups call', 'member_call',
                 'ms', 1000))
        out = ['vifagent port security benchmark: %d ports x %d rounds, '
               '%s ports, agent %s' % (n, len(self.rounds), self.vif_type,
                                       self.host),
               self.host_line(), '',
               '%-50s %10s %10s %10s' % ('metric (over rounds)', 'median',
                                         'min', 'max')]
        for label, key, unit, scale in rows:
            values = [r[key] * scale for r in self.rounds]
            out.append('%-50s %7.2f %-2s %7.2f %-2s %7.2f %-2s' % (
                label, *(x for v in harness.spread(values)
                         for x in (v, unit))))
        ratio = statistics.median(r['ratio'] for r in self.rounds)
        member = statistics.median(r['member'] for r in self.rounds) * 1000
        out += ['',
                'target: %-40s %s (%.2f)' % (
                    'secure / plain < %g' % RATIO_TARGET,
                    'met' if ratio < RATIO_TARGET else 'MISSED', ratio),
                'target: %-40s %s (%.1f ms)' % (
                    'member change median < %g ms' % MEMBER_TARGET_MS,
                    'met' if member < MEMBER_TARGET_MS else 'MISSED',
                    member),
                'ratio_secure_plain=%.2f' % ratio,
                'member_change_median_ms=%.1f' % member]
        print('\n'.join(out))
        sys.stdout.flush()

    def cleanup(self):
        clean = super().cleanup()
        for group in self.groups:
            for tool in ('iptables', 'ip6tables'):
                for kind in secgroup.GROUP_KINDS:
                    chain = secgroup.group_chain_name(kind, group['id'])
                    for verb in ('-F', '-X'):
                        subprocess.run([tool, verb, chain],
                                       capture_output=True)
            for family in (4, 6):
                subprocess.run(['ipset', 'destroy',
                                secgroup.set_name(group['id'], family)],
                               capture_output=True)
        return clean


def parse_args(argv):
    parser = harness.AgentBench.parser(sys.modules[__name__], (
        ('--ports', 200, 'ports per scenario and round'),
        ('--repeat', 3, 'rounds, each with fresh port ids'),
        ('--updates', 20, 'membership changes per round')))
    parser.add_argument('--netns', action='store_true',
                        help='bind netns ports, each with a namespace of '
                             'its own (ACTIVE), instead of ovs_hybrid '
                             'ports without a tap (DOWN)')
    return parser.parse_args(argv)


def main(argv=None):
    return harness.main(Benchmark(parse_args(argv)))


if __name__ == '__main__':
    sys.exit(main())
