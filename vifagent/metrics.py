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

"""Prometheus metrics and the health check, served over HTTP.

Counters that only the running code can see (RPC calls, bind latency) are
recorded as they happen; everything the agent already knows (ports by
status, the reconciliation loop's counters, dependency state) is read at
scrape time, so there is one source of truth for each figure.
"""

import http.server
import json
import threading

from oslo_log import log as logging
import prometheus_client as prom
from prometheus_client import core
from prometheus_client import exposition

LOG = logging.getLogger(__name__)

REGISTRY = prom.CollectorRegistry()

RPC_CALLS = prom.Counter(
    'vifagent_rpc_calls', 'RPC calls served, by method and result.',
    ['method', 'result'], registry=REGISTRY)
BIND_LATENCY = prom.Histogram(
    'vifagent_bind_latency_seconds',
    'Time to validate, store, plug and verify one bind_port call.',
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY)


class Health:
    """The agent's dependencies and other checks, for /healthz and metrics.

    A dependency is a name and a function telling whether it is up; a
    check is a function returning a list of problems (empty when fine).
    """

    def __init__(self):
        self._dependencies = {}
        self._checks = []

    def add_dependency(self, name, is_up):
        self._dependencies[name] = is_up

    def add_check(self, problems):
        self._checks.append(problems)

    def dependencies(self):
        """Whether each dependency is up."""
        return {name: bool(is_up())
                for name, is_up in self._dependencies.items()}

    def problems(self):
        """Reasons the agent is unhealthy; empty when it is healthy."""
        problems = ['%s is not connected' % name
                    for name, up in sorted(self.dependencies().items())
                    if not up]
        for check in self._checks:
            problems.extend(check())
        return problems


class _AgentCollector:
    """Reads the agent's own state at scrape time."""

    def __init__(self, state, health):
        self.state = state
        self.health = health

    def collect(self):
        state = self.state()
        ports = core.GaugeMetricFamily(
            'vifagent_ports', 'Bound ports by status.', labels=['status'])
        for status, count in sorted(state['ports_by_status'].items()):
            ports.add_metric([status], count)
        yield ports
        loop = state['reconcile']
        for name, doc in (('passes', 'Event-driven reconcile passes.'),
                          ('full_passes', 'Full reconcile passes.'),
                          ('retries', 'Retries of failing ports.'),
                          ('errors', 'Port results in ERROR.'),
                          ('orphans_removed', 'Orphaned chains removed.')):
            yield core.CounterMetricFamily('vifagent_reconcile_' + name,
                                           doc, value=loop[name])
        repairs = core.CounterMetricFamily(
            'vifagent_repairs', 'Repairs made, by kind of drift.',
            labels=['kind'])
        for kind, count in sorted(loop['repairs'].items()):
            repairs.add_metric([kind], count)
        yield repairs
        if loop['last_full_pass_duration'] is not None:
            yield core.GaugeMetricFamily(
                'vifagent_reconcile_last_full_pass_seconds',
                'Duration of the last full reconcile pass.',
                value=loop['last_full_pass_duration'])
        gc_state = state['garbage_collection']
        yield core.GaugeMetricFamily(
            'vifagent_gc_suspended',
            'Whether garbage collection is suspended (1) because the store '
            'did not build this host\'s chains, until a sync_ports.',
            value=1 if gc_state['suspended'] else 0)
        yield core.GaugeMetricFamily(
            'vifagent_gc_deferred',
            'Orphaned chains the last full pass kept: over the per-pass '
            'cap, or all of them while collection is suspended.',
            value=gc_state['deferred'])
        writes = core.CounterMetricFamily(
            'vifagent_dataplane_writes', 'Writes made to the host.',
            labels=['kind'])
        for kind, count in sorted(state['counters'].items()):
            writes.add_metric([kind], count)
        yield writes
        up = core.GaugeMetricFamily(
            'vifagent_dependency_up',
            'Whether each dependency is connected (1) or not (0).',
            labels=['dependency'])
        for dependency, ok in sorted(self.health.dependencies().items()):
            up.add_metric([dependency], 1 if ok else 0)
        yield up


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'vifagent'

    def do_GET(self):
        if self.path == '/metrics':
            body = exposition.generate_latest(self.server.registry)
            self._send(200, exposition.CONTENT_TYPE_LATEST, body)
        elif self.path == '/healthz':
            problems = self.server.health.problems()
            body = json.dumps({'status': 'ok' if not problems else 'fail',
                               'problems': problems}).encode()
            self._send(503 if problems else 200, 'application/json', body)
        else:
            self._send(404, 'text/plain', b'not found\n')

    def _send(self, code, content_type, body):
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        LOG.debug('metrics: ' + fmt, *args)


class MetricsServer:
    """The HTTP endpoint on its own thread.

    ``state`` returns the agent's state (as get_agent_state); ``health``
    is a Health. Neither may block: scrapes must answer during a plug.
    """

    def __init__(self, state, health, host, port):
        self._collector = _AgentCollector(state, health)
        REGISTRY.register(self._collector)
        self._httpd = http.server.ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.health = health
        self._httpd.registry = REGISTRY
        self.address = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name='metrics', daemon=True)

    def start(self):
        self._thread.start()
        LOG.info('Metrics and health on http://%s:%d/', *self.address)

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        REGISTRY.unregister(self._collector)
