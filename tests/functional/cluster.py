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

"""A private RabbitMQ cluster for functional tests and benchmarks.

``RabbitCluster`` starts three nodes (by default) with
tools/start-rabbitmq-cluster.sh, in a temporary directory, with node
names, AMQP and distribution ports of its own, so neither the host's
broker on 5672 nor another test's cluster is touched. ``kill(i)`` is a
SIGKILL of node i's Erlang VM; ``start()`` runs the script again, which
starts the nodes that are down (they rejoin from their own data). The
cleanup stops every node and removes the directory, also when the test
failed.
"""

import json
import os
import random
import signal
import socket
import subprocess
import time
import uuid

import fixtures

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(TOP, 'tools', 'start-rabbitmq-cluster.sh')
RABBITMQCTL = '/usr/lib/rabbitmq/bin/rabbitmqctl'
#: Seconds the script may take to start (or restart) the cluster.
START_TIMEOUT = 150


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def free_range(count, low=20000, high=30000):
    """A first port of ``count`` consecutive ports free on 127.0.0.1."""
    while True:
        base = random.randrange(low, high - count)
        if all(_free(p) for p in range(base, base + count)):
            return base


class RabbitCluster(fixtures.Fixture):
    """``nodes`` RabbitMQ nodes clustered on this machine; ``url`` for all."""

    def __init__(self, nodes=3):
        super().__init__()
        self.nodes = nodes

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.name = 'vifagent-c%s' % uuid.uuid4().hex[:8]
        self.port = free_range(self.nodes)
        self.dist_port = free_range(self.nodes)
        self.addCleanup(self._stop)
        self.url = self.start()

    def _args(self):
        return [SCRIPT, '--nodes', str(self.nodes), '--port', str(self.port),
                '--dist-port', str(self.dist_port), '--dir', self.dir,
                '--name', self.name]

    def start(self):
        """Start every node that is down; return the transport URL."""
        proc = subprocess.run(self._args(), capture_output=True, text=True,
                              timeout=START_TIMEOUT)
        if proc.returncode != 0:
            raise AssertionError('cluster did not start:\n%s%s' % (
                proc.stdout, proc.stderr))
        return proc.stdout.strip().splitlines()[-1]

    def _stop(self):
        subprocess.run(self._args() + ['--stop'], capture_output=True,
                       timeout=120)

    def node(self, i):
        return '%s-%d@localhost' % (self.name, i)

    def amqp_port(self, i):
        return self.port + i - 1

    def ctl(self, *args, node=1, timeout=60):
        """rabbitmqctl on ``node``; its stdout (raises on failure)."""
        env = dict(os.environ, HOME=self.dir, RABBITMQ_CONF_ENV_FILE=(
            os.path.join(self.dir, 'node%d' % node, 'rabbitmq-env.conf')))
        proc = subprocess.run([RABBITMQCTL, '-n', self.node(node)] +
                              list(args), env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError('rabbitmqctl %s: %s' % (
                ' '.join(args), proc.stderr.strip()))
        return proc.stdout

    def ctl_json(self, *args, node=1):
        return json.loads(self.ctl('-q', *args, '--formatter', 'json',
                                   node=node) or '[]')

    def beam_pid(self, i):
        with open(os.path.join(self.dir, 'node%d' % i,
                               'rabbitmq.pid')) as f:
            return int(f.read().strip())

    def kill(self, i):
        """SIGKILL node ``i``'s Erlang VM; return once it is gone."""
        pid = self.beam_pid(i)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while os.path.exists('/proc/%d' % pid):
            if time.monotonic() > deadline:
                raise AssertionError('node %d survived SIGKILL' % i)
            time.sleep(0.05)

    def alive(self, i):
        try:
            return os.path.exists('/proc/%d' % self.beam_pid(i))
        except OSError:
            return False

    def live_node(self):
        """The first node whose VM runs: the one to ask."""
        return next(i for i in range(1, self.nodes + 1) if self.alive(i))

    def running_nodes(self):
        return sorted(self.ctl_json('cluster_status',
                                    node=self.live_node())['running_nodes'])

    def connections(self):
        """``[(node index, connection_name)]`` of every client."""
        found = []
        for conn in self.ctl_json('list_connections', 'port',
                                  'client_properties',
                                  node=self.live_node()):
            props = conn.get('client_properties') or []
            if isinstance(props, list):   # [[key, type, value], ...]
                props = {p[0]: p[-1] for p in props}
            found.append((conn.get('port', 0) - self.port + 1,
                          props.get('connection_name', '')))
        return found

    def nodes_of(self, program, pid):
        """The nodes (indexes) the process ``pid`` is connected to."""
        prefix = '%s:%d:' % (program, pid)
        return sorted({i for i, name in self.connections()
                       if name.startswith(prefix)})

    def queues(self):
        """``{name: {'type', 'consumers', 'arguments'}}`` of every queue."""
        return {q['name']: q for q in self.ctl_json(
            'list_queues', 'name', 'type', 'consumers', 'arguments',
            node=self.live_node())}

    def exchanges(self):
        return {e['name'] for e in self.ctl_json(
            'list_exchanges', 'name', node=self.live_node())}
