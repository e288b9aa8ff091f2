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

"""Base for functional tests: real kernel, real Open vSwitch.

Every test makes its own names (fresh port UUIDs, its own integration
bridge ``br-<random>``, namespaces ``vifagent-test-<random>``) and removes
all of it in cleanups that run even when the test fails, so tests run in
parallel and never touch anything they did not create.
"""

import json
import os
import subprocess
import uuid

from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslotest import base

from vifagent import binding as binding_mod
from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)
from vifagent import privileged
from vifagent.reconcile import apply
from vifagent import state

CONF = cfg.CONF


def run(cmd, check=True):
    """Run a command (a list) and return its stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d): %s' % (
            ' '.join(cmd), proc.returncode, proc.stderr.strip()))
    return proc.stdout


def link_json(name):
    """``ip -d -j link show`` of one device, or None when it is absent."""
    proc = subprocess.run(['ip', '-d', '-j', 'link', 'show', 'dev', name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def ovs_row(table, name, columns):
    """Columns of one OVSDB row (by name) through ovs-vsctl, as a dict."""
    proc = subprocess.run(
        ['ovs-vsctl', '--format=json', '--columns=' + ','.join(columns),
         'list', table, name], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)['data'][0]
    return dict(zip(columns, (_ovs_value(v) for v in data)))


def _ovs_value(value):
    if isinstance(value, list) and value and value[0] == 'map':
        return {k: v for k, v in value[1]}
    if isinstance(value, list) and value and value[0] == 'set':
        return value[1]
    return value


def random_mac():
    octets = [0xfa, 0x16, 0x3e] + list(os.urandom(3))
    return ':'.join('%02x' % o for o in octets)


def chain_problems(b, tap, tag, bridge, owner):
    """What is wrong with one port's chain; [] when nothing is.

    Checked with iproute2, /proc, ethtool and ovs-vsctl, not with
    vifagent's own readers.
    """
    names = b.devices
    alias = state.alias_for(b.port_id)
    problems = []

    def check(ok, what):
        if not ok:
            problems.append(what)

    qbr = link_json(names.qbr)
    if qbr is None:
        return ['qbr missing']
    data = qbr.get('linkinfo', {}).get('info_data', {})
    check(qbr.get('linkinfo', {}).get('info_kind') == 'bridge', 'qbr kind')
    check(data.get('stp_state') == 0, 'qbr stp')
    check(data.get('forward_delay') == 0, 'qbr forward_delay')
    check(data.get('mcast_snooping') == 0, 'qbr mcast_snooping')
    check('UP' in qbr['flags'], 'qbr down')
    check(qbr.get('ifalias') == alias, 'qbr alias')
    with open('/proc/sys/net/ipv6/conf/%s/disable_ipv6' % names.qbr) as f:
        check(f.read().strip() == '1', 'qbr ipv6')
    qvb, qvo = link_json(names.qvb), link_json(names.qvo)
    if qvb is None or qvo is None:
        return problems + ['veth missing']
    for dev, label in ((qvb, 'qvb'), (qvo, 'qvo')):
        check(dev.get('linkinfo', {}).get('info_kind') == 'veth',
              label + ' kind')
        check(dev['mtu'] == b.mtu, label + ' mtu')
        check('UP' in dev['flags'], label + ' down')
        check(dev.get('ifalias') == alias, label + ' alias')
    check(qvb.get('link') == names.qvo, 'qvb peer')
    check(qvb.get('master') == names.qbr, 'qvb master')
    offload = run(['ethtool', '-k', names.qvb], check=False)
    check('tx-checksumming: off' in offload, 'qvb offload')
    if tap:
        dev = link_json(tap)
        if dev is None:
            problems.append('tap missing')
        else:
            check(dev.get('master') == names.qbr, 'tap master')
            check(dev['mtu'] == b.mtu, 'tap mtu')
            check('UP' in dev['flags'], 'tap down')
    iface = ovs_row('Interface', names.qvo,
                    ['external_ids', 'ofport', 'error'])
    if iface is None:
        return problems + ['ovs port missing']
    check(iface['external_ids'] == {
        'iface-id': b.port_id, 'iface-status': 'active',
        'attached-mac': b.mac_address, 'vm-uuid': b.instance_uuid,
        'vifagent-owner': owner}, 'ovs external_ids')
    check(isinstance(iface['ofport'], int) and iface['ofport'] > 0,
          'ovs ofport')
    check(iface['error'] == [], 'ovs error')
    port = ovs_row('Port', names.qvo, ['tag', 'other_config'])
    check(port['tag'] == tag, 'ovs tag')
    check(port['other_config'] == {'net_uuid': b.network_id},
          'ovs other_config')
    on = run(['ovs-vsctl', 'port-to-br', names.qvo], check=False).strip()
    check(on == bridge, 'ovs bridge')
    return problems


class RootTestCase(base.BaseTestCase):
    """Root, fresh names, cleanup of every device a test's ports own."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.fail('functional tests need root (CAP_NET_ADMIN)')
        #: Stops (e.g. an agent's kill) run before any device cleanup: a
        #: running agent would rebuild what the cleanup deletes.
        self.stop_before_cleanup = []

    def _stop_writers(self):
        for stop in self.stop_before_cleanup:
            stop()

    def make_netns(self):
        name = 'vifagent-test-%s' % uuid.uuid4().hex[:8]
        run(['ip', 'netns', 'add', name])
        self.addCleanup(run, ['ip', 'netns', 'del', name], False)
        return name

    @staticmethod
    def remove_devices(devices):
        """Cleanup: delete whatever is left of a test port's chain."""
        run(['ovs-vsctl', '--if-exists', 'del-port', devices.qvo], False)
        for name in (devices.qvb, devices.qvo, devices.qbr, devices.tap):
            run(['ip', 'link', 'del', 'dev', name], False)

    def binding_dict(self, netns=None, **fields):
        """A valid binding as the wire carries it; cleanup registered."""
        data = {'port_id': str(uuid.uuid4()),
                'mac_address': random_mac(),
                'instance_uuid': str(uuid.uuid4()),
                'network_id': str(uuid.uuid4())}
        if netns:
            data.update(vif_type='netns', netns=netns)
        data.update(fields)
        self.addCleanup(self.remove_devices,
                        binding_mod.device_names(data['port_id'].lower()))
        self.addCleanup(self._stop_writers)
        return data

    def make_tap(self):
        """A tun/tap device standing in for a libvirt-made vnetN."""
        name = 'vt%s' % uuid.uuid4().hex[:10]
        run(['ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap'])
        self.addCleanup(run, ['ip', 'link', 'del', 'dev', name], False)
        return name


class FunctionalTestCase(RootTestCase):
    """A private integration bridge and an engine for each test."""

    #: Run privsep entrypoints in-process; a subclass proves the daemon.
    in_process_privsep = True

    def setUp(self):
        super().setUp()
        if self.in_process_privsep:
            privileged.run_in_process()
        self.suffix = uuid.uuid4().hex[:8]
        self.bridge = 'br-' + self.suffix
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.conf.config(integration_bridge=self.bridge,
                         datapath_type='netdev', group='ovs')
        self.conf.config(host='functional-' + self.suffix)
        self.addCleanup(run, ['ovs-vsctl', '--if-exists', 'del-br',
                              self.bridge], False)
        self.engine = apply.Engine.from_conf(CONF)
        self.addCleanup(self.engine.stop)

    def make_binding(self, **fields):
        return binding_mod.Binding.from_dict(self.binding_dict(**fields))

    def make_port(self, vlan=10, netns=True, tap=None, **fields):
        """A bound port; netns ports get a fresh namespace as their VM."""
        if netns:
            fields.update(vif_type='netns', netns=self.make_netns())
        b = self.make_binding(**fields)
        return state.DesiredPort.for_binding(b, vlan=vlan, tap=tap)

    def plug(self, *ports):
        results = self.engine.plug(ports)
        self.assertEqual({p.port_id for p in ports}, set(results))
        return results

    def assertStatus(self, status, results):
        for pid, result in results.items():
            self.assertEqual(status, result.status,
                             '%s: %s' % (pid, result.reason))

    def assertChain(self, port):
        """Check one port's whole chain with iproute2, sysfs and ovs-vsctl."""
        self.assertEqual([], chain_problems(port.binding, port.tap, port.tag,
                                            self.bridge, CONF.host))

    def assertGone(self, port):
        names = port.devices
        for name in (names.qbr, names.qvb, names.qvo):
            self.assertIsNone(link_json(name), name)
        if port.binding.owns_tap:
            self.assertIsNone(link_json(names.tap))
        self.assertIsNone(ovs_row('Port', names.qvo, ['name']))
