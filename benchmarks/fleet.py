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

"""Fleet benchmark: N agents on a private 3-node RabbitMQ cluster.

The benchmark starts its own cluster (tools/start-rabbitmq-cluster.sh,
ports of its own, never the host's broker) and then, for each N of
``--agents`` in turn, grows the fleet to N vifagent-agent processes
(distinct hosts and integration bridges, ``[libvirt] enabled = false``,
one RPC topic as in a real fleet, heartbeats every ``--report-interval``
seconds). One controller (this process) binds ``--ports`` fresh
ovs_hybrid ports on every agent from ``--threads`` threads, each reply
checked (``DOWN``: chain complete, no VM), reads each back with
``get_port`` (the bus alone: no device is touched), then removes them
with one ``sync_ports([])`` per agent. Per N: binds and reads per
second, their p50/p99 latency, heartbeat lateness (the longest gap
between two heartbeats of an agent, seen by an AgentRegistry, minus the
interval), broker memory
(RSS of the three Erlang VMs), queues, exchanges and connections on the
cluster, agent RSS (median; and its privsep daemon's). The table goes to
stdout; ``--plot`` writes the figures against N as a PNG (matplotlib,
from benchmarks/requirements.txt)::

    python -m benchmarks.fleet --agents 10 25 50 --plot fleet.png

``--agents 10 --ports 5`` is the CI-sized run. Everything the run made
(agents, bridges, devices, the cluster and its directory) is removed at
the end, on failure and Ctrl-C too.
"""

import concurrent.futures
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from benchmarks import harness
from benchmarks.harness import BenchmarkError
from benchmarks.harness import log
from benchmarks.harness import percentile
from benchmarks.harness import timed

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_SCRIPT = os.path.join(TOP, 'tools', 'start-rabbitmq-cluster.sh')
RABBITMQCTL = '/usr/lib/rabbitmq/bin/rabbitmqctl'
NODES = 3

# (label, key, unit) of the table's rows.
ROWS = (
    ('agents', 'agents', ''),
    ('binds', 'binds', ''),
    ('binds per second', 'rate', '/s'),
    ('bind latency p50', 'p50', 'ms'),
    ('bind latency p99', 'p99', 'ms'),
    ('get_port calls per second', 'read_rate', '/s'),
    ('get_port latency p50', 'read_p50', 'ms'),
    ('get_port latency p99', 'read_p99', 'ms'),
    ('heartbeat lateness, max', 'late_max', 's'),
    ('heartbeat lateness, median', 'late_median', 's'),
    ('broker memory (3 nodes)', 'broker_mb', 'MB'),
    ('queues', 'queues', ''),
    ('exchanges', 'exchanges', ''),
    ('connections', 'connections', ''),
    ('agent RSS, median', 'agent_mb', 'MB'),
    ('privsep daemon RSS, median', 'helper_mb', 'MB'),
    ('agent start, median', 'start_s', 's'),
    ('CPU per bind: agents', 'cpu_agents', 'ms'),
    ('CPU per bind: privsep daemons', 'cpu_helpers', 'ms'),
    ('CPU per bind: Open vSwitch', 'cpu_ovs', 'ms'),
    ('CPU per bind: broker (3 nodes)', 'cpu_broker', 'ms'),
    ('CPU per bind: controller', 'cpu_controller', 'ms'),
    ('CPU per bind: whole machine', 'cpu_host', 'ms'),
)
# Where the host's Open vSwitch (tools/start-ovs.sh) keeps its pid files.
OVS_RUNDIR = '/var/run/openvswitch'


def rss_mb(pid):
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid):
    """User and system CPU a process has used, in seconds (0 if gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # Fields 14 and 15 of proc(5); the list starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def busy_seconds():
    """CPU the whole machine has spent busy, all cores, in seconds."""
    with open('/proc/stat') as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle
    # and iowait.
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf(
        'SC_CLK_TCK')


def pid_file(path):
    """The pid a pid file names (None without one)."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def free_range(count):
    """The first of ``count`` consecutive free ports on 127.0.0.1."""
    while True:
        base = random.randrange(30000, 40000 - count)
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(('127.0.0.1', port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base


class Cluster:
    """The benchmark's own RabbitMQ cluster (see the cluster script)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='vifagent-fleet-rmq-')
        self.name = 'vifagent-f%s' % uuid.uuid4().hex[:8]
        self.port = free_range(NODES)
        self.dist_port = free_range(NODES)
        self.url = None

    def _args(self):
        return [CLUSTER_SCRIPT, '--nodes', str(NODES), '--port',
                str(self.port), '--dist-port', str(self.dist_port),
                '--dir', self.dir, '--name', self.name]

    def start(self):
        proc = subprocess.run(self._args(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchmarkError('cluster did not start: %s%s' % (
                proc.stdout, proc.stderr))
        self.url = proc.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self):
        subprocess.run(self._args() + ['--stop'], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctl_json(self, *args):
        env = dict(os.environ, HOME=self.dir, RABBITMQ_CONF_ENV_FILE=(
            os.path.join(self.dir, 'node1', 'rabbitmq-env.conf')))
        proc = subprocess.run([RABBITMQCTL, '-n', '%s-1@localhost' %
                               self.name, '-q'] + list(args) +
                              ['--formatter', 'json'], env=env,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BenchmarkError('rabbitmqctl %s: %s' % (
                ' '.join(args), proc.stderr.strip()))
        return json.loads(proc.stdout or '[]')

    def pids(self):
        return [pid_file(os.path.join(self.dir, 'node%d' % i,
                                      'rabbitmq.pid'))
                for i in range(1, NODES + 1)]

    def memory_mb(self):
        return sum(rss_mb(pid) for pid in self.pids() if pid)

    def counts(self):
        return {'queues': len(self.ctl_json('list_queues', 'name')),
                'exchanges': len(self.ctl_json('list_exchanges', 'name')),
                'connections': len(self.ctl_json('list_connections',
                                                 'name'))}


class Agent:
    """One vifagent-agent of the fleet: host, bridge, process."""

    def __init__(self, fleet, index, bridge):
        self.host = 'fleet-%s-%d' % (fleet.suffix, index)
        self.bridge = bridge
        self.dir = os.path.join(fleet.dir, self.host)
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, 'vifagent.conf')
        sections = {
            'DEFAULT': dict(host=self.host, transport_url=fleet.url,
                            control_exchange=fleet.topic,
                            log_file=os.path.join(self.dir, 'agent.log')),
            'agent': dict(rpc_topic=fleet.topic,
                          report_topic=fleet.topic + '-reports',
                          report_interval=fleet.args.report_interval,
                          state_path=os.path.join(self.dir, 'state')),
            'ovs': dict(ovsdb_connection=fleet.args.ovsdb,
                        datapath_type=harness.DATAPATH,
                        integration_bridge=bridge),
            'libvirt': dict(enabled='false'),
        }
        with open(self.config, 'w') as f:
            for section, options in sections.items():
                f.write('[%s]\n' % section + ''.join(
                    '%s = %s\n' % kv for kv in options.items()))
        self.proc = None
        self.client = None
        self.started_in = None

    def start(self):
        with open(os.path.join(self.dir, 'agent.out'), 'a') as out:
            self.proc = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable),
                              'vifagent-agent'), '--config-file',
                 self.config], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()

    def helpers(self):
        """Pids of the agent's privsep daemons (they name its config)."""
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    if self.config.encode() in f.read() and \
                            int(pid) != self.proc.pid:
                        found.append(int(pid))
            except OSError:
                continue
        return found

    def output(self):
        """The first warnings and errors of the agent's log, and its end."""
        try:
            with open(os.path.join(self.dir, 'agent.log'),
                      errors='replace') as f:
                text = f.read()
        except OSError:
            return ''
        first = [line[:400] for line in text.splitlines()
                 if ' ERROR ' in line or ' WARNING ' in line][:5]
        return '\n'.join(first) + '\n...\n' + text[-3000:]


class Fleet(harness.Bench):
    """The cluster, the agents, the controller, and their cleanup."""

    def __init__(self, args):
        super().__init__(args)
        self.cluster = None
        self.agents = []
        self.bridges = []
        self.results = []
        self.dir = tempfile.mkdtemp(prefix='vifagent-fleet-')
        self.url = self.topic = self.transport = self.registry = None
        self.listener = None

    def setup(self):
        super().setup()
        self.topic = 'vifagent-fleet-' + self.suffix
        self.cluster = Cluster()
        log('starting a %d-node RabbitMQ cluster', NODES)
        self.url = self.cluster.start()
        log('cluster at %s', self.url)
        from oslo_config import cfg
        from vifagent import conf as vifagent_conf  # noqa: F401
        from vifagent import rpc
        from vifagent.rpc import registry as registry_mod
        cfg.CONF([], project='vifagent', default_config_files=[])
        # The fleet's own exchange, set before the transport reads it.
        rpc.set_defaults(cfg.CONF, self.url)
        cfg.CONF.set_override('control_exchange', self.topic)
        self.transport = rpc.get_transport(cfg.CONF, url=self.url)
        self.registry = registry_mod.AgentRegistry(
            3 * self.args.report_interval)
        self.listener = self.registry.listener(
            self.transport, self.topic + '-reports', 'fleet-controller')
        self.listener.start()

    def binding(self, port):
        return {'port_id': port.port_id, 'mac_address': port.mac,
                'instance_uuid': port.instance_uuid,
                'network_id': self.network_id, 'mtu': harness.MTU}

    def new_bridge(self):
        taken = {b.name for b in self.switch.rows('Bridge')}
        taken.update(self.bridges)
        while True:
            name = 'br-%s' % uuid.uuid4().hex[:8]
            if name not in taken and not self.ipr.link_lookup(ifname=name):
                self.bridges.append(name)
                return name

    def grow(self, count):
        """Start agents until the fleet has ``count``; wait for them."""
        from vifagent.rpc import client as client_mod
        fresh = []
        while len(self.agents) < count:
            agent = Agent(self, len(self.agents) + 1, self.new_bridge())
            self.agents.append(agent)
            fresh.append(agent)
        for agent in fresh:
            agent.start()
        deadline = time.monotonic() + harness.START_TIMEOUT + 3 * count
        for agent in fresh:
            agent.client = client_mod.AgentClient(
                self.transport, agent.host, topic=self.topic,
                timeout=self.args.timeout)
            quick = client_mod.AgentClient(self.transport, agent.host,
                                           topic=self.topic, timeout=3)
            while True:
                if agent.proc.poll() is not None:
                    raise BenchmarkError('agent %s exited:\n%s' % (
                        agent.host, agent.output()))
                try:
                    quick.get_agent_state()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise BenchmarkError('agent %s not serving:\n%s' % (
                            agent.host, agent.output()))
            agent.started_in = time.monotonic() - agent.started
        # The first kernel write starts the agent's privsep daemon: a
        # bind and unbind of one port each, not measured.
        for agent in fresh:
            port = self.new_ports(1)[0]
            reply = agent.client.bind_port(self.binding(port))
            if reply.get('status') != harness.DOWN:
                raise BenchmarkError('warm-up bind on %s: %r' % (
                    agent.host, reply))
            agent.client.unbind_port(port.port_id)
        log('%d agents serving', len(self.agents))

    def run(self):
        for count in sorted(set(self.args.agents)):
            self.grow(count)
            # Heartbeats of every agent, before the binds.
            wait = time.monotonic() + 2 * self.args.report_interval + 10
            while not all(self.registry.alive(a.host) for a in self.agents):
                if time.monotonic() > wait:
                    raise BenchmarkError('not every agent heartbeats')
                time.sleep(0.2)
            self.results.append(self.measure(count))
            log('N=%d: %s', count, json.dumps(self.results[-1]))
            if self.args.json:   # after each N: a later failure keeps it
                with open(self.args.json, 'w') as f:
                    json.dump(self.results, f, indent=2)

    def measure(self, count):
        tasks = []
        for agent in self.agents:
            for port in self.new_ports(self.args.ports):
                tasks.append((agent, port))
        # Interleave agents: the controller's threads spread over the
        # fleet as a scheduler's would.
        tasks.sort(key=lambda t: t[1].port_id)
        before = {a['host']: a['heartbeats'] for a in self.registry.agents()}
        gaps = {}
        stop = threading.Event()

        def watch_gaps():
            while not stop.wait(0.5):
                for a in self.registry.agents():
                    if a['heartbeats'] > before.get(a['host'], 0) + 1:
                        gaps[a['host']] = max(gaps.get(a['host'], 0),
                                              a['heartbeat_gap'] or 0)

        watcher = threading.Thread(target=watch_gaps, daemon=True)
        watcher.start()

        def bind(agent, port):
            reply, took = timed(agent.client.bind_port, self.binding(port))
            if reply.get('port_id') != port.port_id or \
                    reply.get('status') != harness.DOWN:
                raise BenchmarkError('bind on %s: %r' % (agent.host, reply))
            return took

        # The bus alone: get_port reads the store, touches no device.
        def read(agent, port):
            reply, took = timed(agent.client.get_port, port.port_id)
            if reply.get('port_id') != port.port_id:
                raise BenchmarkError('get_port on %s: %r' % (agent.host,
                                                             reply))
            return took

        start = time.perf_counter()
        cpu = self._cpu()
        latencies, elapsed = self._run_all(tasks, bind)
        cpu = {key: (used - cpu[key]) * 1000 / len(tasks)
               for key, used in self._cpu().items()}
        reads, read_elapsed = self._run_all(tasks, read)
        # At least one full heartbeat period inside the measurement.
        time.sleep(max(0.0, self.args.report_interval + 1 -
                       (time.perf_counter() - start)))
        stop.set()
        watcher.join()
        counts = self.cluster.counts()
        helpers = [rss_mb(p) for a in self.agents for p in a.helpers()]
        late = [max(0.0, g - self.args.report_interval)
                for g in gaps.values()] or [0.0]
        result = dict(
            counts, agents=count, binds=len(tasks),
            rate=len(tasks) / elapsed,
            p50=percentile(latencies, 50) * 1000,
            p99=percentile(latencies, 99) * 1000,
            read_rate=len(tasks) / read_elapsed,
            read_p50=percentile(reads, 50) * 1000,
            read_p99=percentile(reads, 99) * 1000,
            late_max=max(late), late_median=statistics.median(late),
            broker_mb=self.cluster.memory_mb(),
            agent_mb=statistics.median(rss_mb(a.proc.pid)
                                       for a in self.agents),
            helper_mb=statistics.median(helpers) if helpers else 0.0,
            start_s=statistics.median(a.started_in for a in self.agents),
            **cpu)
        # Back to no ports, one sync per agent, before the fleet grows.
        for agent in self.agents:
            removed = agent.client.sync_ports([])['removed']
            if len(removed) != self.args.ports:
                raise BenchmarkError('sync_ports([]) on %s removed %d' % (
                    agent.host, len(removed)))
        return result

    def _cpu(self):
        """CPU seconds used so far by each part of the fleet's machine.

        Where the bind phase's CPU goes shows where the curve bends. Open
        vSwitch is the host's (its pid files); the agents' privsep
        daemons are looked up each time, since a killed one is replaced.
        """
        def total(pids):
            return sum(cpu_seconds(pid) for pid in pids if pid)

        return {
            'cpu_agents': total(a.proc.pid for a in self.agents),
            'cpu_helpers': total(p for a in self.agents
                                 for p in a.helpers()),
            'cpu_ovs': total(pid_file(os.path.join(OVS_RUNDIR, name))
                             for name in ('ovs-vswitchd.pid',
                                          'ovsdb-server.pid')),
            'cpu_broker': total(self.cluster.pids()),
            'cpu_controller': cpu_seconds(os.getpid()),
            'cpu_host': busy_seconds(),
        }

    def _run_all(self, tasks, call):
        """Each task's ``call(agent, port)`` from the controller's threads.

        Returns what each call returned and the seconds for them all.
        """
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.args.threads) as ex:
            results = list(ex.map(lambda task: call(*task), tasks))
        return results, time.perf_counter() - start

    def report(self):
        out = sys.stdout
        out.write('Fleet benchmark: %d ports per agent, %d controller '
                  'threads, heartbeat every %d s, 3-node RabbitMQ %s\n' % (
                      self.args.ports, self.args.threads,
                      self.args.report_interval, self._rabbit_version()))
        out.write('%s, %d CPUs, load average %.2f at start\n\n' % (
            os.uname().release, os.cpu_count(), self.loadavg[0]))
        width = max(len(r[0]) for r in ROWS) + 6
        out.write('%-*s' % (width, 'N') + ''.join(
            '%10d' % r['agents'] for r in self.results) + '\n')
        for label, key, unit in ROWS[1:]:
            name = '%s (%s)' % (label, unit) if unit else label
            out.write('%-*s' % (width, name) + ''.join(
                ('%10.1f' if isinstance(r[key], float) else '%10d') %
                r[key] for r in self.results) + '\n')
        if self.args.json:
            with open(self.args.json, 'w') as f:
                json.dump(self.results, f, indent=2)
        if self.args.plot:
            plot(self.results, self.args.plot, self.args)
            out.write('\nfigures: %s\n' % self.args.plot)

    def _rabbit_version(self):
        try:
            return subprocess.run([RABBITMQCTL, 'version'],
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except Exception:
            return ''

    def agent_output(self):
        return '\n'.join(a.output() for a in self.agents[-3:])

    def cleanup(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        clean = True
        if self.listener is not None:
            try:
                self.listener.stop()
                self.listener.wait()
            except Exception as e:
                log('cleanup: report listener: %s', e)
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.terminate()
        for agent in self.agents:
            if agent.proc is None:
                continue
            try:
                agent.proc.wait(15)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
            for pid in agent.helpers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for bridge in self.bridges:
            proc = subprocess.run(['ovs-vsctl', '--if-exists', 'del-br',
                                   bridge], capture_output=True, text=True)
            if proc.returncode:
                clean = False
                log('cleanup: bridge %s: %s', bridge, proc.stderr.strip())
        clean = super().cleanup() and clean
        if self.transport is not None:
            self.transport.cleanup()
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return clean


def plot(results, path, args):
    """The figures against N, as one PNG of seven panels."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    n = [r['agents'] for r in results]
    panels = (
        ('calls per second', [('rate', 'bind_port'),
                              ('read_rate', 'get_port')]),
        ('call latency (ms)', [('p50', 'bind p50'), ('p99', 'bind p99'),
                               ('read_p50', 'get_port p50'),
                               ('read_p99', 'get_port p99')]),
        ('heartbeat lateness (s)', [('late_max', 'max'),
                                    ('late_median', 'median')]),
        ('broker memory, 3 nodes (MB)', [('broker_mb', 'RSS')]),
        ('broker objects', [('queues', 'queues'),
                            ('connections', 'connections'),
                            ('exchanges', 'exchanges')]),
        ('memory per agent (MB)', [('agent_mb', 'agent'),
                                   ('helper_mb', 'privsep daemon')]),
        ('CPU per bind (ms)', [('cpu_agents', 'agents'),
                               ('cpu_helpers', 'privsep daemons'),
                               ('cpu_ovs', 'Open vSwitch'),
                               ('cpu_broker', 'broker'),
                               ('cpu_controller', 'controller'),
                               ('cpu_host', 'whole machine')]),
    )
    fig, axes = pyplot.subplots(2, 4, figsize=(17, 7))
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, series) in zip(axes.flat, panels):
        for key, label in series:
            if all(key in r for r in results):   # older result files
                ax.plot(n, [r[key] for r in results], marker='o',
                        label=label)
        ax.set_title(title)
        ax.set_xlabel('agents (N)')
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle('vifagent fleet on a 3-node RabbitMQ: %d ports per agent, '
                 '%d controller threads' % (args.ports, args.threads))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = harness.make_parser(sys.modules[__name__], (
        ('--ports', 20, 'ports bound on each agent per N'),
        ('--threads', 10, 'controller threads'),
        ('--report-interval', 5, 'agents\' heartbeat period (s)'),
        ('--timeout', 120, 'seconds to wait for any one reply'),
    ), 'OVSDB server for the agents and the checks')
    parser.add_argument('--agents', type=harness.positive, nargs='+',
                        default=[10, 25, 50],
                        help='fleet sizes, in turn (default 10 25 50)')
    parser.add_argument('--plot', help='write the figures to this PNG')
    parser.add_argument('--json', help='write the results to this file')
    args = parser.parse_args()
    if args.plot:   # known now, not after the fleet has run
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error('--plot needs matplotlib (pip install -r '
                         'benchmarks/requirements.txt)')
    return harness.main(Fleet(args))


if __name__ == '__main__':
    sys.exit(main())
