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

"""The RPC endpoint over oslo.messaging's fake driver.

Calls go through a real RPC server and client (fake:// transport), the
endpoint validates and asks a real reconciler on a host in memory.
"""

import threading
import time
import uuid

import fixtures
from oslo_config import cfg
from oslo_messaging import conffixture
from oslotest import base

from tests.unit import fakes
from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)
from vifagent import exception
from vifagent.reconcile import reconciler as reconciler_mod
from vifagent import rpc
from vifagent.rpc import client as client_mod
from vifagent.rpc import server as server_mod
from vifagent import state
from vifagent import store as store_mod


def binding(**extra):
    data = {'port_id': str(uuid.uuid4()),
            'mac_address': 'fa:16:3e:00:00:01',
            'instance_uuid': str(uuid.uuid4()),
            'network_id': str(uuid.uuid4()),
            'vif_type': 'netns', 'netns': 'vm-' + uuid.uuid4().hex[:6]}
    data.update(extra)
    return data


class Base(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(conffixture.ConfFixture(cfg.CONF))
        self.conf = cfg.CONF
        suffix = uuid.uuid4().hex[:8]
        self.conf.set_override('host', 'host-' + suffix)
        self.conf.set_override('rpc_topic', 'topic-' + suffix, 'agent')
        self.conf.set_override('report_topic', 'reports-' + suffix,
                               'agent')
        self.conf.set_override('netns_ports', True, 'agent')
        self.conf.set_override('netns_allowed', ['vm-*'], 'agent')
        path = self.useFixture(fixtures.TempDir()).path
        self.store = store_mod.Store(path)
        self.addCleanup(self.store.close)
        self.host = fakes.FakeHost()
        self.rec = reconciler_mod.Reconciler(
            self.store, fakes.engine(self.host), self.conf.host,
            resync_interval=3600, netns_allowed=['vm-*'])
        self.addCleanup(self.rec.stop)
        self.transport = rpc.get_transport(self.conf, url='fake:/')
        self.addCleanup(self.transport.cleanup)


class TestEndpoint(Base):

    def setUp(self):
        super().setUp()
        self.endpoint = server_mod.AgentEndpoint(
            self.rec, self.conf, lambda: {'extra': 1})
        server = server_mod.get_server(self.transport, self.endpoint,
                                       self.conf)
        server.start()
        self.addCleanup(server.wait)
        self.addCleanup(server.stop)
        self.client = client_mod.AgentClient(
            self.transport, self.conf.host, topic=self.conf.agent.rpc_topic,
            timeout=10)

    def test_bind_get_list_unbind(self):
        data = binding(mtu=1400)
        reply = self.client.bind_port(data)
        self.assertEqual(state.ACTIVE, reply['status'])
        self.assertEqual(1400, reply['mtu'])
        self.assertEqual(reply, self.client.get_port(data['port_id']))
        self.assertEqual([reply], self.client.list_ports())
        self.assertTrue(self.client.unbind_port(
            data['port_id'])['was_bound'])
        self.assertRaises(exception.PortNotFound, self.client.get_port,
                          data['port_id'])

    def test_bad_input_is_typed_and_changes_nothing(self):
        for bad in (dict(binding(), mtu=10), dict(binding(), extra=1),
                    dict(binding(), port_id='nope'), 'not a dict'):
            self.assertRaises(exception.InvalidBinding,
                              self.client.bind_port, bad)
        self.assertRaises(exception.InvalidBinding, self.client.get_port,
                          'nope')
        # A near miss of a bound id is refused, not "not bound".
        bound = self.client.bind_port(binding())['port_id']
        for call in (self.client.get_port, self.client.unbind_port):
            self.assertRaises(exception.InvalidBinding, call, bound + '\n')
        self.client.unbind_port(bound)
        # A cast: the refusal stays on the agent, and nothing changes.
        self.client.network_update('nope', 1500)
        self.assertEqual({}, self.host.links)
        self.assertEqual([], self.store.all())

    def test_netns_ports_follow_the_policy(self):
        self.assertRaises(exception.InvalidBinding, self.client.bind_port,
                          binding(netns='qdhcp-1'))
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          [binding(), binding(netns='qrouter-1')])
        self.conf.set_override('netns_ports', False, 'agent')
        endpoint = server_mod.AgentEndpoint(self.rec, self.conf)
        e = self.assertRaises(exception.InvalidBinding,
                              endpoint._binding, binding())
        self.assertIn('netns ports are disabled', str(e))
        self.assertEqual([], self.store.all())
        self.assertEqual({}, self.host.links)

    def test_sync_is_all_or_nothing(self):
        good, bad = binding(), dict(binding(), mtu=0)
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          [good, bad])
        self.assertRaises(exception.InvalidBinding, self.client.sync_ports,
                          [good, good])
        self.assertEqual([], self.store.all())
        reply = self.client.sync_ports([good])
        self.assertEqual([good['port_id']], reply['added'])

    def test_agent_state(self):
        self.client.bind_port(binding())
        got = self.client.get_agent_state()
        self.assertEqual(self.conf.host, got['host'])
        self.assertEqual(rpc.API_VERSION, got['api_version'])
        self.assertEqual(1, got['ports_by_status'][state.ACTIVE])
        self.assertEqual(1, got['extra'])

    def test_reads_do_not_wait_for_a_plug(self):
        bound = self.client.bind_port(binding())
        ovs = self.rec.engine.ovs
        ovs.hold.clear()
        ovs.entered.clear()
        self.addCleanup(ovs.hold.set)
        threading.Thread(target=self.client.bind_port, args=(binding(),),
                         daemon=True).start()
        self.assertTrue(ovs.entered.wait(5))
        started = time.monotonic()
        self.client.get_agent_state()
        self.client.list_ports()
        self.client.get_port(bound['port_id'])
        self.assertLess(time.monotonic() - started, 0.3)
