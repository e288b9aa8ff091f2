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

"""Port security end to end: real traffic between namespace VMs.

The agent runs as a real process; its filters are real iptables (nft
backend) rules and ipsets on this host. Every check of a drop has a
control that passes, so a test cannot pass because nothing gets through.
"""

import json
import random
import subprocess
import time
import uuid

import oslo_messaging as messaging

from tests.functional import agent_fixture
from tests.functional import base
from vifagent import binding as binding_mod
from vifagent import exception
from vifagent.rpc import client as client_mod
from vifagent import secgroup

PROBE = r'''
import socket, sys
kind, action, ip, port = sys.argv[1:5]
if action == 'listen':
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == 'tcp'
                      else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(port)))
    print('ready', flush=True)
    if kind == 'tcp':
        s.listen(16)
        while True:
            s.accept()[0].close()
    while True:
        data, peer = s.recvfrom(100)
        print(data.decode(), flush=True)
elif kind == 'tcp':
    socket.create_connection((ip, int(port)), timeout=1.5).close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[5])))
    s.sendto(sys.argv[6].encode(), (ip, int(port)))
'''


def netns_run(ns, *argv, timeout=30):
    return subprocess.run(['ip', 'netns', 'exec', ns] + list(argv),
                          capture_output=True, text=True, timeout=timeout)


def rule(direction='ingress', **fields):
    return dict(direction=direction, ethertype='IPv4', **fields)


def remove_firewall(port_id):
    """Cleanup: whatever is left of a test port's chains."""
    key = binding_mod.name_key(port_id)
    for family, save, restore in ((4, 'iptables-save', 'iptables-restore'),
                                  (6, 'ip6tables-save',
                                   'ip6tables-restore')):
        text = subprocess.run([save], capture_output=True, text=True).stdout
        lines, table, chains = [], None, {}
        for line in text.splitlines():
            if line.startswith('*'):
                table = line[1:]
            elif line.startswith('-A vifagent-') and line.endswith(key):
                lines.append((table, '-D' + line[2:]))
            elif line.startswith(':vfa-') and line[6:].startswith(key):
                chains.setdefault(table, []).append(line.split()[0][1:])
        out = []
        for t in ('filter', 'raw'):
            out.append('*' + t)
            out += [rule_ for tt, rule_ in lines if tt == t]
            out += [':%s - [0:0]' % c for c in chains.get(t, ())]
            out += ['-X %s' % c for c in chains.get(t, ())]
            out.append('COMMIT')
        subprocess.run([restore, '--noflush'], input='\n'.join(out) + '\n',
                       text=True, capture_output=True)
    # The ARP check in the bridge table.
    table = ['bridge', secgroup.ARP_TABLE]
    subprocess.run(['nft', 'delete', 'element'] + table + [
        secgroup.ARP_MAP, '{ "qvb%s" }' % key], capture_output=True)
    for verb in ('flush', 'delete'):
        subprocess.run(['nft', verb, 'chain'] + table + [
            secgroup.chain_name('a', port_id)], capture_output=True)


def remove_sets(group_id):
    """Cleanup: a test group's chains (once no port jumps to them), sets."""
    for tool in ('iptables', 'ip6tables'):
        for kind in secgroup.GROUP_KINDS:
            chain = secgroup.group_chain_name(kind, group_id)
            for verb in ('-F', '-X'):
                subprocess.run([tool, verb, chain], capture_output=True)
    for family in (4, 6):
        subprocess.run(['ipset', 'destroy',
                        secgroup.set_name(group_id, family)],
                       capture_output=True)


def chain_rules(chain, tool='iptables'):
    """The rules of one chain as iptables -S prints them, or None."""
    proc = subprocess.run([tool, '-S', chain], capture_output=True,
                          text=True)
    if proc.returncode:
        return None
    return [line for line in proc.stdout.splitlines()
            if line.startswith('-A ')]


def firewall_names(key):
    """Firewall objects (chains, rules, map elements) naming a port key."""
    found = []
    for argv in (['iptables-save'], ['ip6tables-save'],
                 ['nft', 'list', 'table', 'bridge', secgroup.ARP_TABLE]):
        text = subprocess.run(argv, capture_output=True, text=True).stdout
        found += [line for line in text.splitlines() if key in line]
    return found


class SecurityTestCase(base.RootTestCase):

    agent_options = {}

    def setUp(self):
        super().setUp()
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            **self.agent_options))
        self.stop_before_cleanup.append(self.agent.kill)
        self.agent.attach_log_on_failure(self)
        self.client = self.agent.client
        self.net = str(uuid.uuid4())
        self.prefix = '10.%d.%d' % (random.randint(100, 250),
                                    random.randint(1, 250))

    def ip(self, n):
        return '%s.%d' % (self.prefix, n)

    def group(self, rules, members=None, **fields):
        data = dict(id=str(uuid.uuid4()), rules=rules,
                    members={'IPv4': members or []}, **fields)
        self.addCleanup(remove_sets, data['id'])
        return data

    def vm(self, n, groups, bind=True, **fields):
        """A namespace VM with address .n on the test's network."""
        ns = self.make_netns()
        data = self.binding_dict(
            netns=ns, network_id=self.net, port_security_enabled=True,
            fixed_ips=[self.ip(n)], security_groups=[g['id'] for g in groups],
            **fields)
        self.addCleanup(remove_firewall, data['port_id'])
        data['ip'] = self.ip(n)
        if bind:
            self.bind(data)
        return data

    def bind(self, data, status='ACTIVE'):
        wire = {k: v for k, v in data.items() if k != 'ip'}
        reply = self.client.bind_port(wire)
        self.assertEqual(status, reply['status'], reply['reason'])
        if status == 'ACTIVE':
            base.run(['ip', '-n', data['netns'], 'addr', 'replace',
                      data['ip'] + '/24', 'dev', 'eth0'])
        return reply

    def ping(self, src, dst, source=None):
        argv = ['ping', '-c', '1', '-W', '1']
        if source:
            argv += ['-I', source]
        return netns_run(src['netns'], *(argv + [dst['ip']])).returncode == 0

    def assertPing(self, src, dst, ok=True, source=None):
        # A first packet may wait for ARP: allow a retry when it should
        # pass, never count a late pass as a drop.
        for _ in range(3 if ok else 1):
            if self.ping(src, dst, source):
                break
        else:
            if ok:
                self.fail('ping %s -> %s dropped' % (src['ip'], dst['ip']))
            return
        if not ok:
            self.fail('ping %s -> %s passed' % (src['ip'], dst['ip']))

    def listen(self, vm, kind, port):
        proc = subprocess.Popen(
            ['ip', 'netns', 'exec', vm['netns'], 'python3', '-c', PROBE,
             kind, 'listen', '0.0.0.0', str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        # Bound once it says so (python starts slowly on a busy host).
        self.assertEqual('ready', proc.stdout.readline().strip())
        return proc

    def tcp(self, src, dst, port):
        return netns_run(src['netns'], 'python3', '-c', PROBE, 'tcp',
                         'connect', dst['ip'], str(port)).returncode == 0

    def assertTcp(self, src, dst, port, ok=True):
        passed = self.tcp(src, dst, port) or (ok and self.tcp(src, dst,
                                                              port))
        self.assertEqual(ok, passed, 'tcp %s -> %s:%d' % (
            src['ip'], dst['ip'], port))

    def counters(self):
        return self.client.get_agent_state()['counters']


class TestTraffic(SecurityTestCase):

    def test_groups_allow_both_ways_and_return_traffic(self):
        web = self.group([rule(protocol='icmp'),
                          rule(protocol='tcp', port_range_min=22),
                          rule('egress')])
        # A port naming a group the agent does not hold waits for it on
        # the dead VLAN.
        a = self.vm(1, [web], bind=False)
        reply = self.bind(a, status='PENDING')
        self.assertIn(web['id'], reply['reason'])
        tag = base.ovs_row('Port', binding_mod.device_names(
            a['port_id']).qvo, ['tag'])
        self.assertEqual(binding_mod.DEAD_VLAN, tag['tag'])
        self.client.sync_security_groups([web])
        self.assertEqual('ACTIVE', self.client.get_port(a['port_id'])[
            'status'])
        base.run(['ip', '-n', a['netns'], 'addr', 'replace',
                  a['ip'] + '/24', 'dev', 'eth0'])
        b = self.vm(2, [web])
        for vm in (a, b):
            for port in (22, 23):
                self.listen(vm, 'tcp', port)
        # Ingress: ICMP and TCP 22 pass, TCP 23 is dropped, both ways.
        self.assertPing(a, b)
        self.assertPing(b, a)
        self.assertTcp(a, b, 22)
        self.assertTcp(b, a, 22)
        self.assertTcp(a, b, 23, ok=False)
        self.assertTcp(b, a, 23, ok=False)
        # Egress: only TCP 22 may leave c; the answers come back although
        # c's ingress allows no TCP (stateful).
        ssh_out = self.group([rule(protocol='icmp'),
                              rule('egress', protocol='tcp',
                                   port_range_min=22)])
        self.client.sync_security_groups([web, ssh_out])
        c = self.vm(3, [ssh_out])
        self.assertPing(b, c)
        self.assertPing(c, b, ok=False)
        self.assertTcp(c, b, 22)
        self.assertTcp(c, b, 23, ok=False)
        self.assertTcp(b, c, 22, ok=False)
        # Stateless: the answer needs its own rule.
        plain = self.group([rule('egress', protocol='tcp',
                                 port_range_min=22)], stateful=False)
        self.client.sync_security_groups([web, ssh_out, plain])
        d = self.vm(4, [plain])
        self.assertTcp(d, b, 22, ok=False)
        plain['rules'].append(rule(protocol='tcp',
                                   remote_ip_prefix=b['ip'] + '/32'))
        plain['revision'] = 1
        self.client.sync_security_groups([web, ssh_out, plain])
        self.assertTcp(d, b, 22)
        self.assertTcp(d, b, 23, ok=False)

    def test_mixed_stateful_is_error_on_the_dead_vlan(self):
        one = self.group([rule(protocol='icmp')])
        two = self.group([rule(protocol='icmp')], stateful=False)
        self.client.sync_security_groups([one, two])
        a = self.vm(1, [one, two], bind=False)
        reply = self.bind(a, status='ERROR')
        self.assertIn('stateful', reply['reason'])
        tag = base.ovs_row('Port', binding_mod.device_names(
            a['port_id']).qvo, ['tag'])
        self.assertEqual(binding_mod.DEAD_VLAN, tag['tag'])


class TestAntiSpoofing(SecurityTestCase):

    def test_spoofed_sources_and_dhcp_server_are_dropped(self):
        g = self.group([rule(protocol='icmp'), rule(protocol='udp'),
                        rule('egress')])
        self.client.sync_security_groups([g])
        a = self.vm(1, [g], allowed_address_pairs=[
            {'ip_address': self.ip(50)}])
        b = self.vm(2, [g])
        self.assertPing(a, b)
        # An allowed pair's address passes.
        base.run(['ip', '-n', a['netns'], 'addr', 'add',
                  self.ip(50) + '/24', 'dev', 'eth0'])
        self.assertPing(a, b, source=self.ip(50))
        # Another address does not.
        base.run(['ip', '-n', a['netns'], 'addr', 'add',
                  self.ip(99) + '/24', 'dev', 'eth0'])
        self.assertPing(a, b, ok=False, source=self.ip(99))
        # DHCP answers from the VM are dropped; other UDP to port 68
        # passes (the control).
        listener = self.listen(b, 'udp', 68)
        for sport, word in ((1067, 'control'), (67, 'offer')):
            netns_run(a['netns'], 'python3', '-c', PROBE, 'udp', 'send',
                      b['ip'], '68', str(sport), word)
        time.sleep(1)
        listener.kill()
        got = listener.communicate()[0].split()
        self.assertEqual(['control'], got)
        # ARP from the VM only for its own addresses: b resolves the
        # pair's address to a's MAC, not the address a claims falsely.
        mac = a['mac_address'].lower()
        for ip, ok in ((self.ip(50), True), (self.ip(99), False)):
            netns_run(b['netns'], 'ping', '-c', '1', '-W', '1', ip)
            neigh = netns_run(b['netns'], 'ip', 'neigh', 'show', ip).stdout
            self.assertEqual(ok, mac in neigh, '%s: %s' % (ip, neigh))
        # A spoofed source MAC is dropped.
        base.run(['ip', '-n', a['netns'], 'link', 'set', 'eth0', 'address',
                  base.random_mac()])
        base.run(['ip', '-n', b['netns'], 'neigh', 'flush', 'all'])
        self.assertPing(a, b, ok=False)


class TestRemoteGroup(SecurityTestCase):

    def test_membership_change_is_one_set_write(self):
        clients = self.group([rule('egress')])
        servers = self.group([rule(protocol='icmp',
                                   remote_group_id=clients['id'])])
        self.client.sync_security_groups([clients, servers])
        a = self.vm(1, [clients])
        b = self.vm(2, [servers])
        self.assertPing(a, b, ok=False)
        before = self.counters()
        clients['members'] = {'IPv4': [a['ip']]}
        clients['revision'] = 1
        started = time.monotonic()
        self.client.security_group_update(clients)
        while not self.ping(a, b):
            self.assertLess(time.monotonic() - started, 5,
                            'member not let in')
        self.assertLess(time.monotonic() - started, 5)
        after = self.counters()
        # One set written, no chain and no rule of any port.
        self.assertEqual(1, after['firewall_sets'] -
                         before['firewall_sets'])
        self.assertEqual(before['firewall_chains'],
                         after['firewall_chains'])
        self.assertEqual(before['firewall_rules'], after['firewall_rules'])
        # An older revision is ignored; removing the member cuts it.
        clients['members'] = {'IPv4': []}
        clients['revision'] = 0
        self.client.security_group_update(clients)
        time.sleep(1)
        self.assertPing(a, b)
        clients['revision'] = 2
        self.client.security_group_update(clients)
        time.sleep(1)
        self.assertPing(a, b, ok=False)
        self.assertEqual(2, self.counters()['firewall_sets'] -
                         before['firewall_sets'])


class TestDrift(SecurityTestCase):

    agent_options = {'resync_interval': 3}

    def setUp(self):
        super().setUp()
        self.foreign = 'FOREIGN-%s' % uuid.uuid4().hex[:8]
        base.run(['iptables', '-N', self.foreign])
        self.addCleanup(base.run, ['iptables', '-X', self.foreign], False)
        base.run(['iptables', '-A', self.foreign, '-j', 'RETURN'])
        self.addCleanup(base.run, ['iptables', '-F', self.foreign], False)
        base.run(['ipset', 'create', self.foreign, 'hash:ip'])
        self.addCleanup(base.run, ['ipset', 'destroy', self.foreign], False)
        base.run(['ipset', 'add', self.foreign, '192.0.2.1'])

    def wait_repaired(self, what, check):
        deadline = time.monotonic() + 20
        while not check():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.2)

    def test_drift_repaired_foreign_kept_restart_writes_nothing(self):
        peers = self.group([rule(protocol='icmp')])
        g = self.group([rule(protocol='icmp',
                             remote_group_id=peers['id']), rule('egress')])
        self.client.sync_security_groups([g, peers])
        a = self.vm(1, [g])
        b = self.vm(2, [g])
        peers['members'] = {'IPv4': [a['ip']]}
        peers['revision'] = 1
        self.client.sync_security_groups([g, peers])
        plain = self.binding_dict(netns=self.make_netns(),
                                  network_id=self.net)
        self.assertEqual('ACTIVE',
                         self.client.bind_port(plain)['status'])
        self.assertPing(a, b)
        key = binding_mod.name_key(a['port_id'])
        chain_in = 'vfa-i' + key
        chain_spoof = 'vfa-s' + key
        set_name = secgroup.set_name(peers['id'], 4)
        dispatch = [line for line in firewall_names(key)
                    if line.startswith('-A vifagent-FORWARD')][0]

        def has(fragment):
            return lambda: any(fragment in line
                               for line in firewall_names(key))

        # A chain flushed.
        rules = len([line for line in firewall_names(key)
                     if line.startswith('-A ' + chain_in)])
        base.run(['iptables', '-F', chain_in])
        self.wait_repaired('flushed chain', lambda: rules == len(
            [line for line in firewall_names(key)
             if line.startswith('-A ' + chain_in)]))
        # A rule deleted.
        base.run(['iptables', '-D', chain_spoof, '1'])
        self.wait_repaired('deleted rule', has(
            '-A %s -s %s/32' % (chain_spoof, a['ip'])))
        # A jump (the port's dispatch rule) removed.
        base.run(['iptables'] + ['-D'] + dispatch.split()[1:])
        self.wait_repaired('removed jump', has(dispatch))
        # A set member removed.
        base.run(['ipset', 'del', set_name, a['ip']])
        self.wait_repaired('set member', lambda: a['ip'] in subprocess.run(
            ['ipset', 'list', set_name], capture_output=True,
            text=True).stdout)
        self.assertPing(a, b)
        # Foreign objects survived every pass.
        self.assertIn('-A %s -j RETURN' % self.foreign, subprocess.run(
            ['iptables-save'], capture_output=True, text=True).stdout)
        self.assertIn('192.0.2.1', subprocess.run(
            ['ipset', 'list', self.foreign], capture_output=True,
            text=True).stdout)
        # The port without port security has nothing in the firewall.
        self.assertEqual([], firewall_names(
            binding_mod.name_key(plain['port_id'])))
        # A healthy restart writes nothing, through several passes.
        self.assertEqual(0, self.agent.terminate())
        self.agent.start()
        time.sleep(5)
        state = self.client.get_agent_state()
        self.assertEqual(0, state['counters']['firewall_batches'], state)
        self.assertGreater(state['firewall']['dumps'], 1)
        # Unbinding removes the port's rules; the set goes with the last
        # port that used it.
        self.client.unbind_port(a['port_id'])
        self.assertEqual([], firewall_names(key))
        self.client.unbind_port(b['port_id'])
        self.assertNotEqual(0, subprocess.run(
            ['ipset', 'list', set_name], capture_output=True).returncode)


class TestGroupChains(SecurityTestCase):

    agent_options = {'resync_interval': 3}

    def test_group_chain_drift_repaired_and_rule_change_writes_one(self):
        web = self.group([rule(protocol='icmp'),
                          rule(protocol='tcp', port_range_min=22),
                          rule('egress')])
        self.client.sync_security_groups([web])
        a = self.vm(1, [web])
        b = self.vm(2, [web])
        self.listen(b, 'tcp', 23)
        chain = secgroup.group_chain_name('i', web['id'])
        ports_chains = ['vfa-i' + binding_mod.name_key(vm['port_id'])
                        for vm in (a, b)]
        # The group's rules are in its chain, once; the ports jump to it.
        group_rules = chain_rules(chain)
        self.assertEqual(2, len(group_rules), group_rules)
        for port_chain in ports_chains:
            self.assertIn('-A %s -j %s' % (port_chain, chain),
                          chain_rules(port_chain))
        self.assertPing(a, b)
        # Drift: a flushed group chain (both ports' ingress) is rewritten.
        base.run(['iptables', '-F', chain])
        deadline = time.monotonic() + 20
        while chain_rules(chain) != group_rules:
            self.assertLess(time.monotonic(), deadline, 'group chain')
            time.sleep(0.2)
        self.assertPing(a, b)
        # A rule change rewrites the group chain once, no port's chain,
        # no dispatch rule.
        before_ports = [chain_rules(c) for c in ports_chains]
        before = self.counters()
        self.assertTcp(a, b, 23, ok=False)
        web['rules'].append(rule(protocol='tcp', port_range_min=23))
        web['revision'] = 1
        self.client.sync_security_groups([web])
        after = self.counters()
        self.assertEqual(1, after['firewall_chains'] -
                         before['firewall_chains'])
        self.assertEqual(before['firewall_rules'], after['firewall_rules'])
        self.assertEqual(before_ports, [chain_rules(c)
                                        for c in ports_chains])
        self.assertEqual(3, len(chain_rules(chain)))
        self.assertTcp(a, b, 23)
        # The group chains go with the last port that jumps to them.
        self.client.unbind_port(a['port_id'])
        self.assertIsNotNone(chain_rules(chain))
        self.client.unbind_port(b['port_id'])
        for tool in ('iptables', 'ip6tables'):
            for kind in secgroup.GROUP_KINDS:
                self.assertIsNone(chain_rules(
                    secgroup.group_chain_name(kind, web['id']), tool))


class TestContract(SecurityTestCase):

    def test_exact_typed_errors_change_nothing(self):
        g = self.group([rule(protocol='icmp')])
        self.client.sync_security_groups([g])
        a = self.vm(1, [g])
        ports = self.client.list_ports()
        groups = self.client.list_security_groups()
        bad_groups = [
            (dict(g, rules=[rule(colour='red')]), 'rules.colour'),
            (dict(g, rules=[rule(remote_ip_prefix='10.0.0.0/33')]),
             'rules.remote_ip_prefix'),
            (dict(g, rules=[rule(protocol='icmp', port_range_min=256)]),
             'rules.port_range_min'),
            (dict(g, rules=[rule(protocol='tcp', port_range_min=i + 1)
                            for i in range(1001)]), 'rules'),
            (dict(g, surprise=1), 'surprise'),
        ]
        for group, field in bad_groups:
            e = self.assertRaises(exception.InvalidSecurityGroup,
                                  self.client.sync_security_groups,
                                  [group])
            self.assertEqual(field, e.kwargs.get('field'), str(e))
        wire = {k: v for k, v in a.items() if k != 'ip'}
        bad_bindings = [
            (dict(wire, fixed_ips=['10.0.0.0/24']), 'fixed_ips'),
            (dict(wire, security_groups=[str(uuid.uuid4())
                                         for _ in range(17)]),
             'security_groups'),
            (dict(wire, port_security_enabled=False), 'security_groups'),
            (dict(wire, allowed_address_pairs=[{'ip': '10.0.0.1'}]),
             'allowed_address_pairs.ip'),
        ]
        for data, field in bad_bindings:
            e = self.assertRaises(exception.InvalidBinding,
                                  self.client.bind_port, data)
            self.assertEqual(field, e.kwargs.get('field'), str(e))
        stale = dict(g, revision=0)
        g['revision'] = 3
        self.client.sync_security_groups([g])
        self.assertRaises(exception.StaleRevision,
                          self.client.sync_security_groups, [stale])
        self.assertRaises(exception.SecurityGroupNotFound,
                          self.client.get_security_group,
                          str(uuid.uuid4()))
        self.assertEqual(3, self.client.get_security_group(g['id'])[
            'revision'])
        self.assertEqual(ports, self.client.list_ports())
        self.assertEqual([dict(x, revision=3) for x in groups],
                         self.client.list_security_groups())


class TestOldClient(SecurityTestCase):

    def test_a_1_0_client_keeps_working(self):
        old = client_mod.AgentClient(self.agent.transport, self.agent.host,
                                     topic=self.agent.topic, timeout=30,
                                     version_cap='1.0')
        data = self.binding_dict(netns=self.make_netns())
        reply = old.bind_port(data)
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        self.assertFalse(reply['port_security_enabled'])
        self.assertEqual([data['port_id']],
                         [p['port_id'] for p in old.list_ports()])
        self.assertEqual([], firewall_names(
            binding_mod.name_key(data['port_id'])))
        # A 1.1 call is refused on the client side at cap 1.0.
        self.assertRaises(messaging.RPCVersionCapError,
                          old.list_security_groups)


class TestCli(SecurityTestCase):

    def test_groups_and_a_ports_groups(self):
        g = self.group([rule(protocol='icmp'),
                        rule(protocol='tcp', port_range_min=22)],
                       members=[self.ip(1)])
        path = self.agent.dir + '/groups.json'
        with open(path, 'w') as f:
            json.dump([g], f)
        out = self.agent.ctl('sync-groups', path).stdout
        self.assertIn(g['id'], out)
        listed = self.agent.ctl('groups').stdout.splitlines()
        self.assertEqual(['ID', 'REVISION', 'STATEFUL', 'RULES', 'MEMBERS'],
                         listed[0].split())
        self.assertEqual([g['id'], '0', 'True', '2', '1'],
                         listed[1].split())
        shown = self.agent.ctl('group', g['id']).stdout
        self.assertIn('ingress IPv4 tcp 22-22', shown)
        ns = self.make_netns()
        data = self.binding_dict(netns=ns)
        self.addCleanup(remove_firewall, data['port_id'])
        out = self.agent.ctl(
            '--format', 'json', 'bind', '--port-id', data['port_id'],
            '--mac-address', data['mac_address'], '--instance-uuid',
            data['instance_uuid'], '--network-id', data['network_id'],
            '--netns', ns, '--port-security', '--fixed-ip', self.ip(1),
            '--security-group', g['id']).stdout
        self.assertEqual([g['id']], json.loads(out)['security_groups'])
        self.assertIn(g['id'], self.agent.ctl('show',
                                              data['port_id']).stdout)
        proc = self.agent.ctl('group', str(uuid.uuid4()), check=False)
        self.assertEqual(2, proc.returncode)
        self.assertIn('error: SecurityGroupNotFound', proc.stderr)
        g['members'] = {'IPv4': []}
        g['revision'] = 1
        with open(path, 'w') as f:
            json.dump(g, f)
        self.agent.ctl('group-update', path)
        deadline = time.monotonic() + 10
        while self.client.get_security_group(g['id'])['revision'] != 1:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
