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

import select
import socket
import struct
import subprocess
import time
import uuid

from tests.functional import base
from vifagent import binding as binding_mod
from vifagent import state


class LinkEvents:
    """Records kernel link notifications (RTM_NEWLINK/DELLINK) by name.

    A plain netlink socket subscribed to RTMGRP_LINK, parsed by hand, so
    the check does not share code with what it checks.
    """

    _RTMGRP_LINK = 1
    _IFLA_IFNAME = 3
    _SO_RCVBUFFORCE = 33  # not exported by the socket module

    def __init__(self, names):
        self.names = set(names)
        self.events = []
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                   socket.NETLINK_ROUTE)
        # Other tests may create hundreds of devices meanwhile: a large
        # buffer keeps their notifications from overflowing it (an
        # overflow raises ENOBUFS in collect() and fails the test, as
        # events may have been lost).
        self._sock.setsockopt(socket.SOL_SOCKET, self._SO_RCVBUFFORCE,
                              64 << 20)
        self._sock.bind((0, self._RTMGRP_LINK))

    def collect(self, wait=0.3):
        """Drain notifications; return (type, name) for our names."""
        while select.select([self._sock], [], [], wait)[0]:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type = struct.unpack_from('=IH', data, offset)
                name = self._ifname(data[offset + 32:offset + length])
                if name in self.names:
                    self.events.append((msg_type, name))
                offset += (length + 3) & ~3
        return self.events

    def _ifname(self, attrs):
        offset = 0
        while offset + 4 <= len(attrs):
            length, kind = struct.unpack_from('=HH', attrs, offset)
            if length < 4:
                break
            if kind == self._IFLA_IFNAME:
                return attrs[offset + 4:offset + length].rstrip(
                    b'\0').decode()
            offset += (length + 3) & ~3
        return None

    def close(self):
        self._sock.close()


def indexes(port):
    names = port.devices
    return {n: base.link_json(n)['ifindex']
            for n in (names.qbr, names.qvb, names.qvo)}


class TestPlug(base.FunctionalTestCase):

    def test_plug_builds_exact_chain(self):
        port = self.make_port(mtu=1450)
        results = self.plug(port)
        self.assertStatus(state.ACTIVE, results)
        result = results[port.port_id]
        self.assertEqual({'tap': port.devices.tap, 'qbr': port.devices.qbr,
                          'qvb': port.devices.qvb, 'qvo': port.devices.qvo},
                         result.devices)
        self.assertChain(port)
        # The VM side: eth0 with the binding's MAC and MTU, up.
        eth0 = base.run(['ip', '-n', port.binding.netns, '-j', 'link',
                         'show', 'eth0'])
        self.assertIn('"address":"%s"' % port.binding.mac_address, eth0)
        self.assertIn('"mtu":1450', eth0)
        self.assertIn('"operstate":"UP"', eth0)

    def test_libvirt_style_tap(self):
        tap = self.make_tap()
        port = self.make_port(netns=False, tap=tap, mtu=1400)
        self.assertStatus(state.ACTIVE, self.plug(port))
        self.assertChain(port)
        # The tap is never marked: we did not create it.
        self.assertIsNone(base.link_json(tap).get('ifalias'))
        self.engine.unplug([port.port_id])
        self.assertGone(port)
        tap_after = base.link_json(tap)
        self.assertIsNotNone(tap_after, 'the tap must never be deleted')
        self.assertIsNone(tap_after.get('master'))

    def test_no_tap_is_down(self):
        port = self.make_port(netns=False)
        self.assertStatus(state.DOWN, self.plug(port))
        self.assertChain(port)

    def test_admin_down_is_dead_vlan(self):
        port = self.make_port(admin_state_up=False)
        self.assertStatus(state.DOWN, self.plug(port))
        self.assertEqual(binding_mod.DEAD_VLAN,
                         base.ovs_row('Port', port.devices.qvo,
                                      ['tag'])['tag'])

    def test_replug_of_healthy_chain_writes_nothing(self):
        port = self.make_port()
        self.assertStatus(state.ACTIVE, self.plug(port))
        before = dict(vars(self.engine.counters))
        ids = indexes(port)
        names = list(ids) + [port.devices.tap]
        events = LinkEvents(names)
        self.addCleanup(events.close)
        transactions = []
        real = self.engine.ovs.api.transaction

        def counting(*args, **kwargs):
            transactions.append(args)
            return real(*args, **kwargs)

        self.engine.ovs.api.transaction = counting
        for _ in range(3):
            self.assertStatus(state.ACTIVE, self.plug(port))
        self.assertEqual(before, vars(self.engine.counters))
        self.assertEqual([], transactions)
        self.assertEqual([], events.collect())
        self.assertEqual(ids, indexes(port))

    def test_half_built_chain_is_completed(self):
        breakers = {
            'qbr': lambda n: ['ip', 'link', 'del', n.qbr],
            'qvb': lambda n: ['ip', 'link', 'del', n.qvb],
            'qvo': lambda n: ['ip', 'link', 'del', n.qvo],
            'ovs_port': lambda n: ['ovs-vsctl', 'del-port', n.qvo],
            'tap': lambda n: ['ip', 'link', 'del', n.tap],
        }
        for what, breaker in breakers.items():
            with self.subTest(missing=what):
                port = self.make_port()
                self.assertStatus(state.ACTIVE, self.plug(port))
                base.run(breaker(port.devices))
                result = self.plug(port)[port.port_id]
                self.assertEqual(state.ACTIVE, result.status, result.reason)
                self.assertTrue(result.repairs, what)
                self.assertChain(port)

    def test_survivors_are_not_recreated(self):
        port = self.make_port()
        self.plug(port)
        qbr_index = base.link_json(port.devices.qbr)['ifindex']
        base.run(['ip', 'link', 'del', port.devices.qvb])
        self.assertStatus(state.ACTIVE, self.plug(port))
        self.assertEqual(qbr_index,
                         base.link_json(port.devices.qbr)['ifindex'])

    def test_adopts_unmarked_chain_in_place(self):
        # A chain as os-vif would have left it: right names, no markers.
        port = self.make_port(netns=False)
        n = port.devices
        base.run(['ip', 'link', 'add', n.qbr, 'type', 'bridge'])
        base.run(['ip', 'link', 'add', n.qvb, 'type', 'veth', 'peer',
                  'name', n.qvo])
        base.run(['ip', 'link', 'set', n.qvb, 'master', n.qbr])
        base.run(['ovs-vsctl', 'add-port', self.bridge, n.qvo])
        before = indexes(port)
        self.assertStatus(state.DOWN, self.plug(port))
        self.assertEqual(before, indexes(port))
        self.assertChain(port)

    def test_batch_is_one_privsep_call_and_one_transaction(self):
        ports = [self.make_port(netns=False, vlan=20 + i) for i in range(20)]
        before = self.engine.counters.ovsdb_transactions
        results = self.plug(*ports)
        self.assertStatus(state.DOWN, results)
        self.assertEqual(before + 1, self.engine.counters.ovsdb_transactions)
        for port in ports:
            self.assertChain(port)
        results = self.engine.unplug([p.port_id for p in ports])
        for port in ports:
            self.assertIsNone(results[port.port_id].status)
            self.assertGone(port)

    def test_conflict_isolates_one_port_only(self):
        good = self.make_port(netns=False)
        bad = self.make_port(netns=False)
        # Someone else's device holds the bad port's qbr name.
        base.run(['ip', 'tuntap', 'add', 'dev', bad.devices.qbr, 'mode',
                  'tap'])
        results = self.plug(good, bad)
        self.assertEqual(state.DOWN, results[good.port_id].status)
        self.assertEqual(state.ERROR, results[bad.port_id].status)
        self.assertIn(bad.devices.qbr, results[bad.port_id].reason)
        self.assertChain(good)
        # Nothing of the bad port reaches the switch; the tap survives.
        self.assertIsNone(base.ovs_row('Port', bad.devices.qvo, ['name']))
        self.assertEqual('tun', base.link_json(
            bad.devices.qbr)['linkinfo']['info_kind'])


class TestUnplug(base.FunctionalTestCase):

    def test_unplug_removes_everything_of_ours(self):
        port = self.make_port()
        self.plug(port)
        result = self.engine.unplug([port.port_id])[port.port_id]
        self.assertIsNone(result.status, result.reason)
        self.assertGone(port)
        # The VM's namespace is the caller's; it is still there.
        self.assertIn(port.binding.netns, base.run(['ip', 'netns', 'list']))

    def test_unplug_is_idempotent(self):
        port = self.make_port()
        self.plug(port)
        self.engine.unplug([port.port_id])
        result = self.engine.unplug([port.port_id])[port.port_id]
        self.assertIsNone(result.status)
        self.engine.unplug([str(uuid.uuid4())])

    def test_foreign_devices_are_left_alone(self):
        port = self.make_port()
        self.plug(port)
        # Strip our marker from qbr: it is now indistinguishable from a
        # bridge someone else made, so unplug must not touch it.
        base.run(['ip', 'link', 'set', port.devices.qbr, 'alias', ''])
        # A decoy with our prefix for a port we never held.
        decoy = 'qbr' + uuid.uuid4().hex[:11]
        base.run(['ip', 'link', 'add', decoy, 'type', 'bridge'])
        self.addCleanup(base.run, ['ip', 'link', 'del', decoy], False)
        decoy_index = base.link_json(decoy)['ifindex']
        result = self.engine.unplug([port.port_id])[port.port_id]
        self.assertIsNone(result.status, result.reason)
        self.assertEqual([port.devices.qbr], result.foreign)
        self.assertIsNotNone(base.link_json(port.devices.qbr))
        self.assertIsNone(base.link_json(port.devices.qvb))
        self.assertIsNone(base.ovs_row('Port', port.devices.qvo, ['name']))
        self.assertEqual(decoy_index, base.link_json(decoy)['ifindex'])
        self.assertIsNotNone(base.ovs_row('Bridge', self.bridge, ['name']))


class TestTraffic(base.FunctionalTestCase):
    """Two namespaces stand in for VMs: ICMP and TCP across two chains."""

    def _address(self, port, address):
        base.run(['ip', '-n', port.binding.netns, 'addr', 'add', address,
                  'dev', 'eth0'])

    def test_ping_and_tcp(self):
        network = str(uuid.uuid4())
        a = self.make_port(network_id=network, vlan=42)
        b = self.make_port(network_id=network, vlan=42)
        self.assertStatus(state.ACTIVE, self.plug(a, b))
        self._address(a, '10.99.0.1/24')
        self._address(b, '10.99.0.2/24')
        base.run(['ip', 'netns', 'exec', a.binding.netns, 'ping', '-c', '3',
                  '-i', '0.2', '-W', '5', '10.99.0.2'])
        self._tcp(a, b, '10.99.0.2')

    def test_traffic_after_veth_recreated(self):
        # On the userspace datapath a veth re-created under a surviving OVS
        # Port row keeps its ofport but never forwards again: the repair
        # must re-add the port, and only traffic proves it did.
        network = str(uuid.uuid4())
        a = self.make_port(network_id=network, vlan=45)
        b = self.make_port(network_id=network, vlan=45)
        self.assertStatus(state.ACTIVE, self.plug(a, b))
        self._address(a, '10.96.0.1/24')
        self._address(b, '10.96.0.2/24')
        ping = ['ip', 'netns', 'exec', a.binding.netns, 'ping', '-c', '2',
                '-i', '0.2', '-W', '3', '10.96.0.2']
        base.run(ping)
        for device in (a.devices.qvo, a.devices.qvb):
            with self.subTest(deleted=device):
                base.run(['ip', 'link', 'del', device])
                result = self.plug(a)[a.port_id]
                self.assertEqual(state.ACTIVE, result.status, result.reason)
                self.assertIn('ovs_readd', result.repairs)
                base.run(ping)

    def test_different_vlans_are_isolated(self):
        a = self.make_port(vlan=43)
        b = self.make_port(vlan=44)
        self.assertStatus(state.ACTIVE, self.plug(a, b))
        self._address(a, '10.98.0.1/24')
        self._address(b, '10.98.0.2/24')
        out = base.run(['ip', 'netns', 'exec', a.binding.netns, 'ping',
                        '-c', '2', '-i', '0.2', '-W', '1', '10.98.0.2'],
                       check=False)
        self.assertIn('100% packet loss', out)

    def _tcp(self, client, server, server_ip, size=4 * 1024 * 1024):
        """Send ``size`` bytes over TCP from client's netns to server's."""
        script = (
            'import socket,sys\n'
            's=socket.socket(); s.setsockopt(socket.SOL_SOCKET, '
            'socket.SO_REUSEADDR, 1)\n'
            's.bind(("0.0.0.0", 5001)); s.listen(1)\n'
            'print("ready", flush=True)\n'
            'c,_=s.accept(); n=0\n'
            'while True:\n'
            '    d=c.recv(65536)\n'
            '    if not d: break\n'
            '    n+=len(d)\n'
            'print(n, flush=True)\n')
        srv = subprocess.Popen(
            ['ip', 'netns', 'exec', server.binding.netns, 'python3', '-c',
             script], stdout=subprocess.PIPE, text=True)
        self.addCleanup(srv.kill)
        self.assertEqual('ready', srv.stdout.readline().strip())
        sender = (
            'import socket,sys\n'
            's=socket.create_connection((sys.argv[1], 5001), timeout=20)\n'
            'buf=b"x"*65536; left=int(sys.argv[2])\n'
            'while left>0:\n'
            '    s.sendall(buf[:left]); left-=min(left,len(buf))\n'
            's.close()\n')
        start = time.monotonic()
        base.run(['ip', 'netns', 'exec', client.binding.netns, 'python3',
                  '-c', sender, server_ip, str(size)])
        out, _ = srv.communicate(timeout=30)
        self.assertEqual(size, int(out.strip()),
                         'TCP carried %s of %d bytes in %.1fs' % (
                             out.strip(), size, time.monotonic() - start))


class TestPrivsepDaemon(base.FunctionalTestCase):
    """The same engine through real privsep daemons, started without sudo."""

    in_process_privsep = False

    def setUp(self):
        from vifagent import privileged
        privileged.configure(base.CONF)
        for context in privileged.CONTEXTS:
            context.set_client_mode(True)
            self.addCleanup(context.stop)
        super().setUp()

    def test_plug_and_unplug_through_daemons(self):
        port = self.make_port()
        self.assertStatus(state.ACTIVE, self.plug(port))
        self.assertChain(port)
        self.assertIsNone(
            self.engine.unplug([port.port_id])[port.port_id].status)
        self.assertGone(port)

    def test_trim_reaches_running_daemons_only(self):
        from vifagent import privileged
        port = self.make_port()
        self.assertStatus(state.ACTIVE, self.plug(port))
        running = [c.pypath for c in privileged.CONTEXTS
                   if c.channel is not None and c.channel.running]
        self.assertIn(privileged.net_admin.pypath, running)
        self.assertEqual(running, privileged.trim_heaps())
        # A daemon not running is not started to be trimmed.
        self.assertEqual(running, [
            c.pypath for c in privileged.CONTEXTS
            if c.channel is not None and c.channel.running])
