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
import socket
import threading
import time
import urllib.error
import urllib.request

from prometheus_client import parser

from tests.functional import agent_fixture
from tests.functional import base
from vifagent import exception


class OvsdbProxy:
    """A TCP relay to ovsdb-server that a test can cut and restore.

    The agent reaches OVSDB through it, so cutting it takes OVSDB away from
    this agent only, never from other tests on the host.
    """

    def __init__(self, target=('127.0.0.1', 6640)):
        self.target = target
        self.port = None
        self._listener = None
        self._conns = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', self.port or 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,),
                         daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        # shutdown() wakes the thread blocked in accept(); close() alone
        # would leave the socket listening until that call returns.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class TestMetrics(base.RootTestCase):

    def setUp(self):
        super().setUp()
        self.proxy = OvsdbProxy()
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
