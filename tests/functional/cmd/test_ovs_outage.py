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

"""End to end: the agent while Open vSwitch restarts, stops or stalls.

Each test has an Open vSwitch of its own (``ovs_fixture.PrivateOvs``:
ovsdb-server and ovs-vswitchd with their own database, sockets and
network namespace) and runs the agent in that namespace, so stopping,
pausing or wiping it never disturbs the host's, which other tests use.

What is checked is what the agent alone puts back, with no call from the
controller: the integration bridge, every port on it with its tag,
other_config and the Interface's external_ids, exactly one Port row per
port, and an ofport for each. Recovery times are printed.
"""

import copy
import queue
import threading
import time

from tests.functional.cmd import test_broker_outage as outage
from tests.functional import netns
from tests.functional import ovs_fixture
from vifagent import binding as binding_mod
from vifagent.rpc import client as client_mod

#: Seconds an OVSDB transaction may take in these agents: short, so a
#: stalled ovs-vswitchd costs the test little.
OVSDB_TIMEOUT = 3
#: Ports bound before each fault.
PORTS = 3
#: The agent has everything back within this after Open vSwitch is.
RECOVER_WITHIN = 60
#: Seconds a call from the test may take.
CALL_TIMEOUT = 120


def health(url, namespace):
    """``(status, body)`` of /healthz in the agent's namespace, or None."""
    with netns.inside(namespace):
        return outage.health(url)


def comparable(ports):
    """What must come back as it was (ofports may be new ones)."""
    return {name: (p['tag'], p['other_config'], p['external_ids'], p['n'])
            for name, p in (ports or {}).items()}


class OvsTestCase(outage.AgentTestCase):
    """An agent on an Open vSwitch of the test's own, with bound ports."""

    #: The agent's options (the OVSDB connection is added).
    sections = {'ovs': {'ovsdb_timeout': OVSDB_TIMEOUT}}

    def setUp(self):
        super().setUp()
        self.ovs = self.useFixture(ovs_fixture.PrivateOvs())
        sections = copy.deepcopy(self.sections)
        sections.setdefault('ovs', {})['ovsdb_connection'] = \
            self.ovs.connection
        self.start_agent(netns=self.ovs.netns, sections=sections)
        # The first bind starts the privileged daemon, which takes tens of
        # seconds on a busy 2-core host: more than the fixture's 30 s.
        self.client = client_mod.AgentClient(
            self.agent.transport, self.agent.host, topic=self.agent.topic,
            timeout=CALL_TIMEOUT)

    def bind_ports(self, count=PORTS):
        bound = [self.bind() for _ in range(count)]
        self.before = self.ovs.ports(self.agent.bridge)
        self.assertEqual(count, len(self.before))
        for name, port in self.before.items():
            self.assertEqual(1, port['n'], name)
            self.assertGreater(port['ofport'], 0, name)
        return bound

    def statuses(self):
        return {p['port_id']: p['status'] for p in self.client.list_ports()}

    def all_back(self, expected=None):
        """True once OVS and the agent's statuses are as before the fault."""
        now = self.ovs.ports(self.agent.bridge)
        if comparable(now) != comparable(expected or self.before):
            return False
        if not all(isinstance(p['ofport'], int) and p['ofport'] > 0
                   for p in now.values()):
            return False
        return set(self.statuses().values()) == {'ACTIVE'}

    def wait_back(self, what, expected=None):
        _, took = outage.wait_for(lambda: self.all_back(expected),
                                  RECOVER_WITHIN, what, interval=0.1)
        return took

    def bridge_datapath(self):
        rows = [b for b in self.ovs.rows('Bridge', ['name', 'datapath_type'])
                if b['name'] == self.agent.bridge]
        return rows[0]['datapath_type'] if rows else None


class TestOvsRestart(OvsTestCase):

    def test_restart_keeping_the_database(self):
        """Both daemons restarted on the same database: all back."""
        self.bind_ports()
        self.ovs.restart(fresh=False)
        took = self.wait_back('ports back after the restart')
        self.note('restart, database kept: everything back %.2f s after '
                  'Open vSwitch was up again', took)
        self.assertEqual('netdev', self.bridge_datapath())
        # The agent follows the restarted server: a port removed behind
        # its back now is put back by the agent alone.
        self.ovs.vsctl('del-port', sorted(self.before)[0])
        took = self.wait_back('the removed port back')
        self.note('a port removed after the restart back %.2f s later',
                  took)

    def test_restart_with_a_fresh_database(self):
        """Both daemons restarted on an empty database: the agent rebuilds.

        The bridge, every port, its tag, other_config and external_ids
        come back from the agent's store alone.
        """
        self.bind_ports()
        self.ovs.restart(fresh=True)
        took = self.wait_back('bridge and ports rebuilt')
        self.note('restart, fresh database: bridge and %d ports back '
                  '%.2f s after Open vSwitch was up again', PORTS, took)
        self.assertEqual('netdev', self.bridge_datapath())

    def test_vswitchd_stopped_then_started(self):
        """ovs-vswitchd alone away: a port bound meanwhile is not ACTIVE.

        Its Port row is written but gets no ofport; once ovs-vswitchd is
        back, every port is attached and ACTIVE, the new one included.
        """
        self.bind_ports()
        self.ovs.stop_switch()
        data = self.binding_dict(netns=self.make_netns())
        reply = self.client.bind_port(data)
        self.note('bind with ovs-vswitchd stopped: %s (%s)',
                  reply['status'], reply['reason'])
        self.assertNotEqual('ACTIVE', reply['status'])
        qvo = binding_mod.device_names(data['port_id']).qvo
        self.assertEqual([], self.ovs.ports(self.agent.bridge)[qvo][
            'ofport'] or [])
        expected = dict(self.before)
        started = time.monotonic()
        self.ovs.start_switch()
        up = time.monotonic() - started
        expected[qvo] = self.ovs.ports(self.agent.bridge)[qvo]
        expected[qvo]['n'] = 1
        took = self.wait_back('all attached again', expected)
        self.note('ovs-vswitchd started in %.2f s; all %d ports ACTIVE '
                  '%.2f s after', up, PORTS + 1, took)


class TestStalledTransaction(OvsTestCase):

    def _bind_while_paused(self, which):
        """Bind a port while ``which`` is stopped; resume; all converge."""
        self.bind_ports()
        data = self.binding_dict(netns=self.make_netns())
        qvo = binding_mod.device_names(data['port_id']).qvo
        self.ovs.pause(which)
        self.addCleanup(self.ovs.resume, which)
        replies = queue.Queue()

        def bind():
            try:
                replies.put(self.client.bind_port(data))
            except Exception as e:
                replies.put(e)
        paused = time.monotonic()
        threading.Thread(target=bind, daemon=True).start()
        reply = replies.get(timeout=OVSDB_TIMEOUT * 4 + 30)
        self.note('bind with %s paused answered in %.2f s: %s', which,
                  time.monotonic() - paused,
                  reply if isinstance(reply, Exception) else
                  '%s (%s)' % (reply['status'], reply['reason']))
        # Answered while Open vSwitch still stalls: a timeout, not a hang.
        self.assertNotIsInstance(reply, Exception)
        self.assertNotEqual('ACTIVE', reply['status'])
        if which == 'switch':
            # Committed, not attached: the truth, not a false timeout.
            self.assertIn('ovs-vswitchd did not attach', reply['reason'])
            self.assertEqual(1, self.ovs.ports(self.agent.bridge)[qvo]['n'])
        resumed = time.monotonic()
        self.ovs.resume(which)
        expected = None

        def converged():
            nonlocal expected
            ports = self.ovs.ports(self.agent.bridge)
            if qvo not in ports:
                return False
            expected = dict(self.before, **{qvo: dict(ports[qvo], n=1)})
            return self.all_back(expected)
        outage.wait_for(converged, RECOVER_WITHIN, 'the new port ACTIVE',
                        interval=0.1)
        took = time.monotonic() - resumed
        self.note('%s resumed: all %d ports ACTIVE, none duplicated, '
                  '%.2f s later', which, PORTS + 1, took)
        ports = self.ovs.ports(self.agent.bridge)
        self.assertEqual({1}, {p['n'] for p in ports.values()})
        self.assertEqual(data['network_id'],
                         ports[qvo]['other_config']['net_uuid'])
        self.assertEqual(data['port_id'],
                         ports[qvo]['external_ids']['iface-id'])

    def test_vswitchd_paused_during_a_plug(self):
        """The transaction commits, ovs-vswitchd takes it late."""
        self._bind_while_paused('switch')

    def test_ovsdb_server_paused_during_a_plug(self):
        """The transaction waits for ovsdb-server, which commits it late."""
        self._bind_while_paused('server')


class TestStartWithoutOvsdb(OvsTestCase):

    def test_starts_serves_reads_and_plugs_once_ovsdb_appears(self):
        """OVSDB unreachable at start: the agent runs and waits for it.

        It answers calls, says on /healthz that ovsdb is down, serves its
        stored ports, and once Open vSwitch appears (on an empty database)
        builds the bridge and every port without being asked.
        """
        bound = self.bind_ports(2)
        self.assertEqual(0, self.agent.terminate())
        self.ovs.stop_switch()
        self.ovs.stop_server()
        self.agent.start(wait=False)
        state = self.agent.wait_ready(60)
        self.assertEqual(2, state['ports'])
        url = self.agent.metrics_url()
        status, body = outage.wait_for(
            lambda: health(url, self.ovs.netns), 10, '/healthz')[0]
        self.assertEqual(503, status, body)
        self.assertIn('ovsdb is not connected', body['problems'])
        for data, _ in bound:
            port = self.client.get_port(data['port_id'])
            self.assertEqual(data['mac_address'], port['mac_address'])
        started = time.monotonic()
        self.ovs.start_server(fresh=True)
        self.ovs.start_switch()
        up = time.monotonic() - started
        took = self.wait_back('bridge and ports built')
        self.note('Open vSwitch up in %.2f s; bridge and %d ports built '
                  '%.2f s later by an agent started without it', up,
                  len(bound), took)
        self.assertEqual('netdev', self.bridge_datapath())
        status, body = outage.wait_for(
            lambda: health(url, self.ovs.netns), 10, '/healthz')[0]
        self.assertNotIn('ovsdb is not connected', body['problems'])
