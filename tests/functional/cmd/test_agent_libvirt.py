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

"""End to end with libvirt: a real agent process, real domains.

The agent's periodic pass is an hour away in these tests, so everything
they see happen was driven by libvirt, netlink and OVSDB events.
"""

import json
import queue
import subprocess
import threading
import time
import uuid

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional import libvirt_fixture
from vifagent import binding as binding_mod

TIMEOUT = 30


class ReportWatch:
    """``vifagent-ctl watch``: every port_status the agent casts."""

    def __init__(self, test, agent):
        self.statuses = queue.Queue()
        self.proc = subprocess.Popen(
            [agent_fixture.script('vifagent-ctl'), '--config-file',
             agent.config, '--format', 'json', 'watch', '--duration',
             '600'], stdout=subprocess.PIPE, text=True)
        test.addCleanup(self.proc.wait)
        test.addCleanup(self.proc.kill)
        subscribed = threading.Event()
        threading.Thread(target=self._read, args=(subscribed,),
                         daemon=True).start()
        # The first heartbeat shows the listener is subscribed.
        if not subscribed.wait(TIMEOUT):
            test.fail('no heartbeat from the agent')

    def _read(self, subscribed):
        for line in self.proc.stdout:
            message = json.loads(line)
            if message['type'] == 'report_state':
                subscribed.set()
            elif message['type'] == 'port_status':
                for status in message['data']:
                    self.statuses.put((status['port_id'], status['status']))

    def sequence(self, port_id, expected, timeout=TIMEOUT):
        """Wait until ``port_id``'s reported statuses were ``expected``.

        A repeated status is a change of reason only (a stopping VM's tap
        can vanish just before libvirt says the domain stopped); it is
        counted once.
        """
        seen = []
        deadline = time.monotonic() + timeout
        while seen != expected:
            if len(seen) >= len(expected) or time.monotonic() > deadline:
                raise AssertionError('reports for %s: %s, expected %s' %
                                     (port_id, seen, expected))
            try:
                pid, status = self.statuses.get(timeout=0.5)
            except queue.Empty:
                continue
            if pid == port_id and seen[-1:] != [status]:
                seen.append(status)


class LibvirtAgentTestCase(base.RootTestCase):

    def setUp(self):
        super().setUp()
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            report_interval=1, libvirt=True, resync_interval=3600))
        self.stop_before_cleanup.append(self.agent.kill)
        self.client = self.agent.client

    def domain(self, *interfaces, **kwargs):
        return self.useFixture(libvirt_fixture.DomainFixture(
            list(interfaces), **kwargs))

    def wait_port(self, port_id, status, reason=None, timeout=TIMEOUT):
        """Poll get_port until it has ``status`` (and ``reason``)."""
        deadline = time.monotonic() + timeout
        while True:
            port = self.client.get_port(port_id)
            if port['status'] == status and (
                    reason is None or reason in (port['reason'] or '')):
                return port
            if time.monotonic() > deadline:
                self.fail('port %s is %s (%s), not %s' % (
                    port_id, port['status'], port['reason'], status))
            time.sleep(0.1)

    def wait_reconnected(self, connects):
        """Until the agent is back on libvirt (more than ``connects``)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            state = self.client.get_agent_state()['libvirt']
            if state['connected'] and state['connects'] > connects:
                return
            self.assertLess(time.monotonic(), deadline, 'no reconnection')
            time.sleep(0.1)

    def assertWired(self, data, port):
        """The port's chain is whole, its tap included."""
        b = binding_mod.Binding.from_dict(data)
        tap = port['devices']['tap']
        self.assertIsNotNone(tap)
        self.assertEqual([], base.chain_problems(
            b, tap, port['vlan'], self.agent.bridge, self.agent.host))


class TestTaps(LibvirtAgentTestCase):

    def test_domain_before_binding_ethernet(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        tap = dom.taps()[mac]
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid,
                                 mtu=1450)
        self.client.bind_port(data)
        # The agent learns of the domain's start by an event, which may
        # come after the reply: the port settles at ACTIVE.
        reply = self.wait_port(data['port_id'], 'ACTIVE')
        self.assertEqual(tap, reply['devices']['tap'])
        self.assertWired(data, reply)
        # The tap is libvirt's: it carries no marker, and unbinding
        # detaches it without deleting it.
        self.assertNotIn('ifalias', base.link_json(tap))
        self.client.unbind_port(data['port_id'])
        left = base.link_json(tap)
        self.assertIsNotNone(left, 'the tap was deleted')
        self.assertNotIn('master', left)

    def test_binding_before_domain_bridge_type(self):
        mac = base.random_mac()
        data = self.binding_dict(mac_address=mac)
        reply = self.client.bind_port(data)
        self.assertEqual(('DOWN', 'domain is not defined'),
                         (reply['status'], reply['reason']))
        self.assertIsNone(reply['devices']['tap'])
        qbr = reply['devices']['qbr']
        # libvirt enslaves a type='bridge' tap itself; the agent checks.
        dom = self.domain({'mac': mac, 'type': 'bridge', 'bridge': qbr},
                          uuid=data['instance_uuid'])
        port = self.wait_port(data['port_id'], 'ACTIVE')
        self.assertEqual(dom.taps()[mac], port['devices']['tap'])
        self.assertWired(data, port)

    def test_bridge_of_another_port_is_refused(self):
        mac = base.random_mac()
        other = self.binding_dict()
        other_qbr = self.client.bind_port(other)['devices']['qbr']
        dom = self.domain({'mac': mac, 'type': 'bridge',
                           'bridge': other_qbr})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        reply = self.client.bind_port(data)
        self.assertEqual('ERROR', reply['status'])
        self.assertIn('not %s' % reply['devices']['qbr'], reply['reason'])
        # The tap stays where libvirt put it.
        self.assertEqual(other_qbr,
                         base.link_json(dom.taps()[mac])['master'])

    def test_tap_drift_is_repaired_by_its_event(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        reply = self.client.bind_port(data)
        tap = reply['devices']['tap']
        base.run(['ip', 'link', 'set', tap, 'nomaster'])
        deadline = time.monotonic() + TIMEOUT
        while base.link_json(tap).get('master') != reply['devices']['qbr']:
            self.assertLess(time.monotonic(), deadline, 'not re-enslaved')
            time.sleep(0.05)

    def test_agent_restart_with_running_vms_is_quiet(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        self.client.bind_port(data)
        # On a busy host the watcher may see the new domain's start a
        # moment after the bind; what matters here is the restart.
        before = self.wait_port(pid, 'ACTIVE')
        watch = ReportWatch(self, self.agent)
        index = base.link_json(before['devices']['tap'])['ifindex']
        self.agent.kill()
        self.agent.start()
        # The first pass already sees the VM: no DOWN flap, no cast.
        self.assertEqual(before, self.client.get_port(pid))
        time.sleep(3)   # heartbeats come every second
        casts = []
        while not watch.statuses.empty():
            casts.append(watch.statuses.get())
        self.assertEqual([], [c for c in casts if c[0] == pid])
        self.assertEqual(index, base.link_json(
            before['devices']['tap'])['ifindex'])


class TestLifeCycle(LibvirtAgentTestCase):

    def test_start_destroy_start(self):
        watch = ReportWatch(self, self.agent)
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'}, start=False)
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        # The agent learns of the new definition by an event: the reply
        # may still say 'not defined'; the port settles at 'shut off'.
        self.assertEqual('DOWN', self.client.bind_port(data)['status'])
        self.wait_port(pid, 'DOWN', 'domain is shut off')

        dom.start()
        first = self.wait_port(pid, 'ACTIVE')
        self.assertWired(data, first)
        dom.destroy()
        down = self.wait_port(pid, 'DOWN', 'domain is shut off')
        self.assertIsNone(down['devices']['tap'])
        dom.start()
        second = self.wait_port(pid, 'ACTIVE')
        self.assertWired(data, second)
        self.assertNotEqual(first['devices']['tap'],
                            second['devices']['tap'])
        watch.sequence(pid, ['DOWN', 'ACTIVE', 'DOWN', 'ACTIVE'])

    def test_paused_domain_is_wired_but_down(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        self.client.bind_port(data)
        self.wait_port(pid, 'ACTIVE')  # the domain's start is an event
        dom.domain.suspend()
        port = self.wait_port(pid, 'DOWN', 'domain is paused')
        # Still wired, ready for the guest to resume.
        self.assertWired(data, port)
        dom.domain.resume()
        self.wait_port(pid, 'ACTIVE')

    def test_hot_unplug_and_plug(self):
        mac = base.random_mac()
        keep = base.random_mac()
        # A guest OS, as only a guest acknowledges a hot-unplug.
        dom = self.domain({'mac': keep, 'type': 'ethernet'},
                          {'mac': mac, 'type': 'ethernet'}, guest={})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        self.client.bind_port(data)
        self.wait_port(pid, 'ACTIVE')  # the domain's start is an event
        dom.detach_interface(mac)
        self.wait_port(pid, 'DOWN', 'no interface with MAC')
        dom.attach_interface({'mac': mac, 'type': 'ethernet'})
        self.assertWired(data, self.wait_port(pid, 'ACTIVE'))

    def test_undefined_domain_leaves_the_binding_down(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        self.client.bind_port(data)
        self.wait_port(pid, 'ACTIVE')  # the domain's start is an event
        dom.destroy()
        dom.undefine()
        port = self.wait_port(pid, 'DOWN', 'domain is not defined')
        # The binding and the rest of the chain stay until unbound.
        self.assertEqual([pid], [p['port_id']
                                 for p in self.client.list_ports()])
        self.assertIsNotNone(base.link_json(port['devices']['qvo']))


class TestLibvirtdRestart(LibvirtAgentTestCase):
    """libvirtd restarts under a running agent and running VMs."""

    def setUp(self):
        # Before the agent connects: no other test may use libvirtd
        # while this one restarts it.
        self.useFixture(libvirt_fixture.LibvirtExclusive())
        super().setUp()

    def test_reconnects_and_follows_events_again(self):
        mac = base.random_mac()
        dom = self.domain({'mac': mac, 'type': 'ethernet'})
        data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
        pid = data['port_id']
        self.client.bind_port(data)
        # On a busy host the watcher may see the new domain's start a
        # moment after the bind.
        self.wait_port(pid, 'ACTIVE')
        connects = self.client.get_agent_state()['libvirt']['connects']

        libvirt_fixture.stop_libvirtd()
        try:
            deadline = time.monotonic() + TIMEOUT
            while self.client.get_agent_state()['libvirt']['connected']:
                self.assertLess(time.monotonic(), deadline,
                                'the agent did not notice libvirtd left')
                time.sleep(0.1)
            # The VM still runs, so its port stays ACTIVE.
            self.assertEqual('ACTIVE', self.client.get_port(pid)['status'])
        finally:
            libvirt_fixture.start_libvirtd()
        self.wait_reconnected(connects)
        # Events flow again on the new connection.
        dom.destroy()
        self.wait_port(pid, 'DOWN', 'domain is shut off')
        dom.start()
        self.assertWired(data, self.wait_port(pid, 'ACTIVE'))

    def test_domains_change_while_libvirtd_is_away(self):
        """One VM dies and one starts around a libvirtd restart.

        ``keep`` runs throughout and must not flap: no status cast for it
        from the restart on, and the same tap. ``gone``'s QEMU is killed
        while libvirtd is stopped (nothing could tell the agent through
        libvirt then); ``new`` is started as soon as libvirtd is back,
        before or after the agent reconnects. Afterwards the agent's view
        is libvirt's: ``gone`` DOWN without a tap, ``new`` ACTIVE and
        wired to its new tap, ``keep`` as it was.
        """
        ports = {}
        for name, start in (('keep', True), ('gone', True), ('new', False)):
            mac = base.random_mac()
            dom = self.domain({'mac': mac, 'type': 'ethernet'}, start=start)
            data = self.binding_dict(mac_address=mac, instance_uuid=dom.uuid)
            self.client.bind_port(data)
            ports[name] = (dom, data)
        for name, status in (('keep', 'ACTIVE'), ('gone', 'ACTIVE'),
                             ('new', 'DOWN')):
            self.wait_port(ports[name][1]['port_id'], status)
        keep_id = ports['keep'][1]['port_id']
        kept = self.client.get_port(keep_id)
        keep_index = base.link_json(kept['devices']['tap'])['ifindex']
        watch = ReportWatch(self, self.agent)
        connects = self.client.get_agent_state()['libvirt']['connects']

        started = time.monotonic()
        libvirt_fixture.stop_libvirtd()
        try:
            ports['gone'][0].kill_qemu()
        finally:
            libvirt_fixture.start_libvirtd()
        ports['new'][0].start()
        self.wait_reconnected(connects)

        dom, data = ports['new']
        new = self.wait_port(data['port_id'], 'ACTIVE')
        self.assertEqual(dom.taps()[data['mac_address']],
                         new['devices']['tap'])
        self.assertWired(data, new)
        gone = self.wait_port(ports['gone'][1]['port_id'], 'DOWN')
        self.assertIsNone(gone['devices']['tap'])
        print('libvirtd restart: views right %.1f s after libvirtd was '
              'stopped' % (time.monotonic() - started))
        # keep: no cast since the restart began, nothing changed.
        time.sleep(3)   # heartbeats come every second: casts have come
        casts = []
        while not watch.statuses.empty():
            casts.append(watch.statuses.get())
        self.assertEqual([], [c for c in casts if c[0] == keep_id])
        self.assertEqual(kept, self.client.get_port(keep_id))
        self.assertEqual(keep_index, base.link_json(
            kept['devices']['tap'])['ifindex'])
        self.assertWired(ports['keep'][1], kept)
        # The watch saw the others change, so it was listening.
        self.assertIn((ports['new'][1]['port_id'], 'ACTIVE'), casts)


class TestGuestTraffic(LibvirtAgentTestCase):
    """Two booted guests talk through their chains and br-int."""

    def test_two_guests_ping_each_other(self):
        network = str(uuid.uuid4())
        a = self.binding_dict(network_id=network)
        b = self.binding_dict(network_id=network)
        # Bound before the domains exist, as Nova does: the qbr must be
        # there for libvirt to put b's type='bridge' tap on it.
        for data in (a, b):
            reply = self.client.bind_port(data)
            self.assertEqual('DOWN', reply['status'])
        guest_a = self.domain(
            {'mac': a['mac_address'], 'type': 'ethernet'},
            uuid=a['instance_uuid'],
            guest={'ip': '192.168.77.1/24', 'peer': '192.168.77.2'})
        guest_b = self.domain(
            {'mac': b['mac_address'], 'type': 'bridge',
             'bridge': reply['devices']['qbr']},
            uuid=b['instance_uuid'],
            guest={'ip': '192.168.77.2/24', 'peer': '192.168.77.1'})
        for data in (a, b):
            self.assertWired(data, self.wait_port(data['port_id'], 'ACTIVE'))
        guest_a.wait_console('VIFAGENT-PING-OK 192.168.77.2')
        guest_b.wait_console('VIFAGENT-PING-OK 192.168.77.1')

        # b's NIC is hot-unplugged: its port goes DOWN, a loses its peer.
        guest_b.detach_interface(b['mac_address'])
        self.wait_port(b['port_id'], 'DOWN', 'no interface with MAC')
        seen = len(guest_a.console_text())
        guest_a.wait_console('VIFAGENT-PING-FAIL', after=seen)
        # And plugged again: the port is wired and ACTIVE once more.
        guest_b.attach_interface({'mac': b['mac_address'],
                                  'type': 'ethernet'})
        self.assertWired(b, self.wait_port(b['port_id'], 'ACTIVE'))
