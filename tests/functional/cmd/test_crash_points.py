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

"""kill -9 at chosen points, then at random ones, and what must hold after.

The agent is armed through VIFAGENT_FAULTS (vifagent.faults) and killed
by SIGKILL at the point. After each restart: every acknowledged binding
is there, a sync_ports is all or nothing, every port converges, no device
or OVS port is leaked or doubled, the store passes PRAGMA integrity_check
and no privileged daemon outlives its agent.

Ports are VM ports with libvirt off (the chain without a tap: DOWN when
complete), so hundreds of them cost no namespaces.
"""

import json
import os
import random
import sqlite3
import subprocess
import threading
import time
import uuid

from testtools import content

from tests.functional import agent_fixture
from tests.functional import base
from vifagent import binding as binding_mod
from vifagent.rpc import client as client_mod
from vifagent import store as store_mod

#: Rounds of the random test, and its seed (printed, so a failure can be
#: replayed with VIFAGENT_CRASH_SEED).
ROUNDS = int(os.environ.get('VIFAGENT_CRASH_ROUNDS', 20))

# Points an agent's own calls can meet (privsep.mid_batch kills the
# privileged daemon, not the agent: the agent must carry on).
AGENT_POINTS = ('bind.stored', 'store.sync_mid_transaction', 'sync.stored',
                'plug.links_applied', 'ovs.readd_removed',
                'unplug.ovs_removed', 'privsep.mid_batch')

DIED = object()


class Host:
    """The host as iproute2 and ovs-vsctl see it, in three commands."""

    def __init__(self, bridge):
        self.links = {link['ifname']: link for link in json.loads(
            base.run(['ip', '-d', '-j', 'link', 'show']))}
        rows = json.loads(base.run(
            ['ovs-vsctl', '--format=json', '--columns=name,tag',
             'list', 'Port']))['data']
        self.ovs_names = [row[0] for row in rows]
        self.tags = {row[0]: row[1] for row in rows}
        self.on_bridge = base.run(
            ['ovs-vsctl', 'list-ports', bridge], check=False).split()


class CrashTestCase(base.RootTestCase):

    faults = None

    def setUp(self):
        super().setUp()
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            faults=self.faults))
        self.agent.attach_log_on_failure(self)
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client
        self.bindings = {}
        self.addCleanup(self.remove_all)

    def binding(self, **fields):
        """A VM port's binding (no per-port cleanup: see remove_all)."""
        data = {'port_id': str(uuid.uuid4()),
                'mac_address': base.random_mac(),
                'instance_uuid': str(uuid.uuid4()),
                'network_id': str(uuid.uuid4())}
        data.update(fields)
        self.bindings[data['port_id']] = data
        return data

    def remove_all(self):
        """Cleanup: the agent stopped, every device of the test's ports."""
        self.agent.kill()
        host = Host(self.agent.bridge)
        links = [n for pid in self.bindings
                 for n in binding_mod.device_names(pid).all()
                 if n in host.links]
        qvos = [binding_mod.device_names(pid).qvo for pid in self.bindings]
        qvos = [n for n in qvos if n in host.ovs_names]
        if qvos:
            base.run(['ovs-vsctl'] + [arg for n in qvos for arg in (
                '--', '--if-exists', 'del-port', n)][1:], check=False)
        if links:
            subprocess.run(['ip', '-force', '-batch', '-'], check=False,
                           input=''.join('link del dev %s\n' % n
                                         for n in links),
                           text=True, capture_output=True)

    # -- driving an agent that may die under a call ----------------------
    def call(self, method, *args):
        """The reply of ``method``, or DIED if the agent died under it."""
        client = client_mod.AgentClient(
            self.agent.transport, self.agent.host, topic=self.agent.topic,
            timeout=120)
        outcome = []

        def run():
            try:
                outcome.append(getattr(client, method)(*args))
            except Exception as e:
                outcome.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            if self.agent.proc.poll() is not None:
                return DIED
            thread.join(0.05)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def crash(self):
        """The agent is dead (or killed now): check what it left."""
        if self.agent.proc.poll() is None:
            self.agent.kill()
        self.assertEqual(-9, self.agent.proc.returncode)
        self.assertEqual(['ok'], self.integrity())
        self.assertNoDaemonLeft()

    def restart(self, faults=None):
        started = time.monotonic()
        self.agent.start(faults=faults)
        return time.monotonic() - started

    def integrity(self):
        path = os.path.join(self.agent.dir, 'state', store_mod.DB_NAME)
        db = sqlite3.connect('file:%s?mode=ro' % path, uri=True)
        try:
            return [r[0] for r in db.execute('PRAGMA integrity_check')]
        finally:
            db.close()

    def assertNoDaemonLeft(self, timeout=10):
        """Privileged daemons end with their agent's connection."""
        deadline = time.monotonic() + timeout
        while True:
            left = []
            for pid in filter(str.isdigit, os.listdir('/proc')):
                try:
                    with open('/proc/%s/cmdline' % pid, 'rb') as f:
                        cmdline = f.read().split(b'\0')
                except OSError:
                    continue
                if self.agent.config.encode() in cmdline:
                    left.append(int(pid))
            if not left:
                return
            if time.monotonic() > deadline:
                self.fail('processes outlive the agent: %s' % left)
            time.sleep(0.1)

    # -- what must hold --------------------------------------------------
    def bound(self):
        return {p['port_id'] for p in self.client.list_ports()}

    def assertConverged(self, expected, timeout=90):
        """Exactly ``expected`` bound, each complete; nothing else left."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            ports = {p['port_id']: p for p in self.client.list_ports()}
            self.assertEqual(set(expected), set(ports))
            waiting = {pid: (p['status'], p['reason'])
                       for pid, p in ports.items() if p['status'] != 'DOWN'}
            problems = self.host_problems(ports) if not waiting else None
            if not waiting and not problems:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                self.fail('not converged: %s %s' % (
                    list(waiting.items())[:5], (problems or [])[:10]))
            time.sleep(0.2)

    def host_problems(self, ports):
        """Devices and OVS ports of the test's ports against ``ports``."""
        host = Host(self.agent.bridge)
        problems = []
        qvos = []
        for pid in self.bindings:
            names = binding_mod.device_names(pid)
            mine = [n for n in (names.qbr, names.qvb, names.qvo, names.tap)
                    if n in host.links]
            if pid not in ports:
                if mine or names.qvo in host.ovs_names:
                    problems.append('%s leaked: %s' % (pid, mine))
                continue
            qvos.append(names.qvo)
            alias = 'vifagent:' + pid
            for n in (names.qbr, names.qvb, names.qvo):
                link = host.links.get(n)
                if link is None or link.get('ifalias') != alias:
                    problems.append('%s: %s missing or unmarked' % (pid, n))
            if host.links.get(names.qvb, {}).get('master') != names.qbr:
                problems.append('%s: qvb not in qbr' % pid)
            if host.ovs_names.count(names.qvo) != 1:
                problems.append('%s: %d OVS ports' % (
                    pid, host.ovs_names.count(names.qvo)))
            elif host.tags[names.qvo] != ports[pid]['vlan']:
                problems.append('%s: tag %s, not %s' % (
                    pid, host.tags[names.qvo], ports[pid]['vlan']))
        if sorted(host.on_bridge) != sorted(qvos):
            problems.append('bridge holds %s, not %s' % (
                sorted(host.on_bridge), sorted(qvos)))
        return problems


class TestChosenPoints(CrashTestCase):

    def test_after_the_commit_before_the_plug(self):
        self.restart_armed('bind.stored')
        a = self.binding()
        self.assertIs(DIED, self.call('bind_port', a))
        self.crash()
        self.restart()
        # Committed though never acknowledged: it is bound and built.
        self.assertConverged({a['port_id']})

    def test_in_the_middle_of_a_batch_plug(self):
        self.restart_armed('plug.links_applied')
        ports = [self.binding() for _ in range(4)]
        self.assertIs(DIED, self.call('sync_ports', ports))
        self.crash()
        self.restart()
        self.assertConverged({p['port_id'] for p in ports})

    def test_between_the_transactions_of_an_ovs_readd(self):
        a, b = self.binding(), self.binding()
        self.client.sync_ports([a, b])
        self.agent.kill()
        # A veth made again under a surviving OVS row must be re-added.
        qvb = binding_mod.device_names(a['port_id']).qvb
        base.run(['ip', 'link', 'del', 'dev', qvb])
        self.restart_armed('ovs.readd_removed', wait=False)
        self.agent.proc.wait(60)
        self.crash()
        self.restart()
        self.assertConverged({a['port_id'], b['port_id']})

    def test_in_the_middle_of_an_unplug(self):
        a, b = self.binding(), self.binding()
        self.client.sync_ports([a, b])
        self.restart_armed('unplug.ovs_removed')
        self.assertIs(DIED, self.call('unbind_port', a['port_id']))
        self.crash()
        self.restart()
        self.assertConverged({b['port_id']})

    def test_sync_is_all_or_nothing(self):
        kept = self.binding()
        self.client.sync_ports([kept])
        self.restart_armed('store.sync_mid_transaction')
        ports = [self.binding() for _ in range(500)]
        self.assertIs(DIED, self.call('sync_ports', ports))
        self.crash()
        self.restart()
        self.assertConverged({kept['port_id']})

    def restart_armed(self, point, wait=True):
        self.agent.kill()
        self.agent.start(faults=point, wait=wait)


class TestBigSync(CrashTestCase):

    def test_kill_in_the_middle_of_a_500_port_sync(self):
        self.agent.kill()
        self.agent.start(faults='plug.links_applied')
        ports = [self.binding() for _ in range(500)]
        started = time.monotonic()
        self.assertIs(DIED, self.call('sync_ports', ports))
        print('500-port sync killed after %.1f s' % (
            time.monotonic() - started))
        self.crash()
        took = self.restart()
        converged = self.assertConverged({p['port_id'] for p in ports},
                                         timeout=180)
        print('restart %.1f s, converged %.1f s later' % (took, converged))
        self.client.sync_ports([])
        self.assertConverged(set())


class TestRandomPoints(CrashTestCase):

    def test_random_points(self):
        seed = int(os.environ.get('VIFAGENT_CRASH_SEED',
                                  random.randrange(2 ** 32)))
        print('seed %d' % seed)
        self.addDetail('seed', content.text_content(str(seed)))
        rng = random.Random(seed)
        nets = [str(uuid.uuid4()) for _ in range(2)]
        pool = [self.binding(network_id=nets[i % 2]) for i in range(4)]
        by_id = {p['port_id']: p for p in pool}
        acked = set()
        for round_ in range(ROUNDS):
            point = rng.choice(AGENT_POINTS)
            hit = rng.randint(1, 3)
            self.agent.kill()
            t0 = time.monotonic()
            self.agent.start(faults='%s@%d' % (point, hit))
            t1 = time.monotonic()
            allowed = [set(acked)]
            for _ in range(3):
                op = rng.choice(('bind', 'unbind', 'sync'))
                if op == 'bind':
                    pid = rng.choice(pool)['port_id']
                    outcome = self.call('bind_port', by_id[pid])
                    after = acked | {pid}
                elif op == 'unbind':
                    pid = rng.choice(pool)['port_id']
                    outcome = self.call('unbind_port', pid)
                    after = acked - {pid}
                else:
                    chosen = rng.sample(pool, rng.randint(0, len(pool)))
                    outcome = self.call('sync_ports', chosen)
                    after = {p['port_id'] for p in chosen}
                if outcome is DIED:
                    allowed = [set(acked), after]
                    break
                acked = after
                allowed = [set(acked)]
            t2 = time.monotonic()
            self.crash()
            took = self.restart()
            now = self.bound()
            self.assertIn(now, allowed, 'round %d: %s@%d' % (
                round_, point, hit))
            acked = now
            converged = self.assertConverged(acked)
            print('round %d %s@%d: %s; start %.1f s, ops %.1f s, restart '
                  '%.1f s, converged %.1f s' % (
                      round_, point, hit,
                      'killed' if outcome is DIED else 'completed',
                      t1 - t0, t2 - t1, took, converged))
