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

"""The metrics and health endpoint of a running agent."""

import json
import time
import urllib.error
import urllib.request

from prometheus_client import parser

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional import proxy as proxy_mod
from vifagent import exception


class TestMetrics(base.RootTestCase):

    def setUp(self):
        super().setUp()
        self.proxy = proxy_mod.SocketProxy(('127.0.0.1', 6640))
        self.addCleanup(self.proxy.cut)
        self.agent = self.useFixture(agent_fixture.AgentFixture(
            sections={
                'metrics': {'enabled': 'true', 'bind_port': 0},
                'ovs': {'ovsdb_connection':
                        'tcp:127.0.0.1:%d' % self.proxy.port}}))
        self.stop_before_cleanup.append(self.agent.kill)
        self.url = self.agent.client.get_agent_state()['metrics']
        self.assertTrue(self.url.startswith('http://127.0.0.1:'))

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def samples(self):
        status, text = self.get('metrics')
        self.assertEqual(200, status)
        found = {}
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name,) + tuple(sorted(sample.labels.items()))
                found[key] = sample.value
        return found

    def test_scrape(self):
        data = self.binding_dict(netns=self.make_netns())
        self.agent.client.bind_port(data)
        self.agent.client.get_port(data['port_id'])
        self.assertRaises(exception.InvalidBinding,
                          self.agent.client.get_port, 'not-a-uuid')
        s = self.samples()
        self.assertEqual(1, s[('vifagent_ports', ('status', 'ACTIVE'))])
        self.assertEqual(0, s[('vifagent_ports', ('status', 'ERROR'))])
        self.assertEqual(1, s[('vifagent_bind_latency_seconds_count',)])
        self.assertEqual(1, s[('vifagent_rpc_calls_total',
                               ('method', 'bind_port'), ('result', 'ok'))])
        self.assertEqual(1, s[('vifagent_rpc_calls_total',
                               ('method', 'get_port'),
                               ('result', 'InvalidBinding'))])
        self.assertEqual(1, s[('vifagent_reconcile_full_passes_total',)])
        self.assertIn(('vifagent_reconcile_last_full_pass_seconds',), s)
        self.assertGreaterEqual(s[('vifagent_dataplane_writes_total',
                                   ('kind', 'ovsdb_transactions'))], 1)
        for dependency in ('ovsdb', 'rpc'):
            self.assertEqual(1, s[('vifagent_dependency_up',
                                   ('dependency', dependency))])
        self.assertEqual(404, self.get('nothing')[0])

    def test_health_follows_ovsdb(self):
        self.assertEqual((200, {'status': 'ok', 'problems': []}),
                         self.health())
        self.proxy.cut()
        status, body = self.wait_health(503)
        self.assertIn('ovsdb is not connected', body['problems'])
        self.assertEqual(0, self.samples()[('vifagent_dependency_up',
                                            ('dependency', 'ovsdb'))])
        self.proxy.restore()
        self.wait_health(200, timeout=60)

    def health(self):
        status, text = self.get('healthz')
        return status, json.loads(text)

    def wait_health(self, code, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.health()
            if status == code:
                return status, body
            self.assertLess(time.monotonic(), deadline,
                            'health stayed %s: %s' % (status, body))
            time.sleep(0.2)
