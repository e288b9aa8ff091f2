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

"""What the benchmarks driving a real vifagent-agent process share.

``AgentBenchmark`` writes a configuration of its own and starts the
``vifagent-agent`` console script installed beside this interpreter, with
fresh names: host ``bench-<hex>``, RPC topic and control exchange
``vifagent-bench-<hex>``, integration bridge ``br-<hex>`` (userspace
datapath), a state directory in a temporary directory and namespaces
``vifagent-bench-<hex>-<n>``. Its cleanup, which runs on failure and
Ctrl-C too, stops the agent and removes the bridge, every device of the
ports it generated, its namespaces, its broker queues and exchanges and
the temporary directory; nothing else on the host is touched.

A benchmark subclasses it, adds ``run()`` and ``report()`` and calls
``main()`` with its parsed arguments.
"""

import dataclasses
import errno
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

import kombu
from oslo_config import cfg
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from benchmarks import plug
from vifagent import binding
from vifagent import exception
from vifagent import rpc
from vifagent.rpc import client as client_mod

TRANSPORT_URL = os.environ.get('VIFAGENT_TRANSPORT_URL',
                               'rabbit://guest:guest@127.0.0.1:5672/')
DATAPATH = 'netdev'
MTU = 1500
DOWN = 'DOWN'
ACTIVE = 'ACTIVE'

# How long an independent check waits for the kernel and the OVSDB replica
# to show what a reply announced, and how long the agent may take to start.
START_TIMEOUT = 60.0


# One error class for every benchmark, so a failed check of plug's helpers
# stops an RPC or reconcile run the same way.
BenchmarkError = plug.BenchmarkError
CHECK_TIMEOUT = plug.CHECK_TIMEOUT


class AgentExited(BenchmarkError):
    """The agent process ended while the benchmark was using it."""


@dataclasses.dataclass(frozen=True)
class Port:
    port_id: str
    mac: str
    instance_uuid: str
    netns: str = None

    @property
    def names(self):
        return binding.device_names(self.port_id)


def percentile(values, pct):
    """The nearest-rank percentile of ``values`` (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def agent_script(name):
    """The console script installed beside this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


# Shared with the plug benchmark, which runs without this module.
log = plug.log
positive = plug.positive


def add_agent_arguments(parser):
    """The options of every benchmark that runs the agent."""
    parser.add_argument('--transport-url', default=TRANSPORT_URL,
                        help='RabbitMQ (default $VIFAGENT_TRANSPORT_URL or '
                             'rabbit://guest:guest@127.0.0.1:5672/)')
    parser.add_argument('--ovsdb', default='tcp:127.0.0.1:6640',
                        help='OVSDB server for the agent and the checks '
                             '(default tcp:127.0.0.1:6640)')
    parser.add_argument('--timeout', type=positive, default=120,
                        help='seconds to wait for any one reply '
                             '(default 120)')
    parser.add_argument('--debug', action='store_true',
                        help='run the agent with debug logging (slower; '
                             'see --keep-log)')
    parser.add_argument('--keep-log', metavar='PATH',
                        help='copy the agent\'s log file to PATH at the end')


class AgentBenchmark:
    """A vifagent-agent of its own, its client, and their cleanup."""

    #: The benchmark's OVSDB view (checks, free names, bridge removal).
    switch_class = plug.Switch
    #: Seconds the agent may take to remove every port at cleanup.
    unbind_timeout = 60

    def __init__(self, args):
        self.args = args
        self.suffix = None
        self.host = None
        self.topic = None
        self.report_topic = None
        self.bridge = None
        self.dir = None
        self.config = None
        self.proc = None
        self.transport = None
        self.url = None
        self.client = None
        self.switch = None
        self.ipr = None
        self.network_id = str(uuid.uuid4())
        self.expected = ACTIVE if args.netns else DOWN
        self.vif_type = (binding.VIF_TYPE_NETNS if args.netns
                         else binding.VIF_TYPE_OVS_HYBRID)
        # Every port id this run generated and every namespace it made:
        # cleanup removes what is left of them.
        self.ids = set()
        self.namespaces = set()
        self.ns_count = 0
        self.started_in = None
        self.stopping = False
        self.loadavg = None

    # -- setup and cleanup --------------------------------------------------
    def agent_options(self):
        """Extra ``[agent]`` options for the configuration file."""
        return {}

    def setup(self):
        args = self.args
        self.loadavg = os.getloadavg()
        self.ipr = IPRoute()
        self.switch = self.switch_class(args.ovsdb)
        while True:
            suffix = '%08x' % random.getrandbits(32)
            bridge = 'br-' + suffix
            if not self.switch.bridge_exists(bridge) and \
                    not self.ipr.link_lookup(ifname=bridge):
                break
        self.suffix = suffix
        self.bridge = bridge
        self.host = 'bench-' + suffix
        self.topic = 'vifagent-bench-' + suffix
        self.report_topic = self.topic + '-reports'
        self.dir = tempfile.mkdtemp(prefix='vifagent-bench-')
        self.config = os.path.join(self.dir, 'vifagent.conf')
        self._write_config()
        # The client reads the same file: same broker, same exchange. It
        # must be the global configuration: oslo.messaging's RPC client
        # reads its tracing options from there whatever it is given.
        conf = cfg.CONF
        conf(['--config-file', self.config], project='vifagent',
             default_config_files=[])
        self.transport = rpc.get_transport(conf)
        # Imported here: importing vifagent first makes oslo.messaging's
        # service backend threads, not eventlet.
        import oslo_messaging
        self.url = oslo_messaging.TransportURL.parse(conf,
                                                     args.transport_url)
        self.client = client_mod.AgentClient(
            self.transport, self.host, topic=self.topic,
            timeout=args.timeout)
        log('agent %s, topic %s, bridge %s (datapath %s), %s ports',
            self.host, self.topic, bridge, DATAPATH, self.vif_type)
        self._start_agent()

    def _write_config(self):
        args = self.args
        extra = ''.join('%s = %s\n' % kv
                        for kv in sorted(self.agent_options().items()))
        with open(self.config, 'w') as f:
            f.write(
                '[DEFAULT]\n'
                'host = %(host)s\n'
                'transport_url = %(url)s\n'
                # Our own exchange: nothing we declare can clash with what
                # other agents on this broker declared.
                'control_exchange = %(topic)s\n'
                'log_file = %(log)s\n'
                'debug = %(debug)s\n'
                '[agent]\n'
                'rpc_topic = %(topic)s\n'
                'report_topic = %(report_topic)s\n'
                'state_path = %(state)s\n'
                '%(extra)s'
                '[ovs]\n'
                'ovsdb_connection = %(ovsdb)s\n'
                'integration_bridge = %(bridge)s\n'
                'datapath_type = %(datapath)s\n'
                '[oslo_messaging_rabbit]\n'
                # Queues and exchanges go away with their consumers.
                'amqp_auto_delete = true\n'
                'rabbit_transient_queues_ttl = 60\n' % {
                    'host': self.host, 'url': args.transport_url,
                    'topic': self.topic, 'report_topic': self.report_topic,
                    'log': self.log_path, 'debug': args.debug,
                    'state': os.path.join(self.dir, 'state'),
                    'extra': extra, 'ovsdb': args.ovsdb,
                    'bridge': self.bridge, 'datapath': DATAPATH})

    @property
    def log_path(self):
        return os.path.join(self.dir, 'agent.log')

    def _start_agent(self):
        command = [agent_script('vifagent-agent'), '--config-file',
                   self.config]
        start = time.perf_counter()
        with open(os.path.join(self.dir, 'agent.out'), 'a') as out:
            # A session of its own: Ctrl-C reaches the benchmark only, and
            # the benchmark stops the agent itself.
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        state = self._wait_ready()
        self.started_in = time.perf_counter() - start
        log('agent pid %d answering after %.1f s', self.proc.pid,
            self.started_in)
        self.stopping = False
        threading.Thread(target=self._watch_agent, args=(self.proc,),
                         name='agent-watch', daemon=True).start()
        return state

    def _wait_ready(self):
        """Poll get_agent_state until the new agent answers; return it."""
        quick = client_mod.AgentClient(self.transport, self.host,
                                       topic=self.topic, timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._expect_running()
            try:
                return quick.get_agent_state()
            except exception.VifAgentException:
                raise
            except Exception as e:
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        'agent not ready after %ds (%s: %s):\n%s' % (
                            START_TIMEOUT, type(e).__name__, e,
                            self.agent_output()))
                time.sleep(0.1)

    def _expect_running(self):
        if self.proc.poll() is not None:
            raise BenchmarkError('vifagent-agent exited with %s:\n%s' % (
                self.proc.returncode, self.agent_output()))

    def _watch_agent(self, proc):
        """Interrupt the run when the agent dies: no waiting for replies."""
        code = proc.wait()
        if proc is self.proc and not self.stopping:
            log('vifagent-agent exited with %s during the run', code)
            os.kill(os.getpid(), signal.SIGUSR1)

    def agent_output(self):
        text = []
        for name in ('agent.out', 'agent.log'):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text.append(f.read()[-3000:])
            except OSError:
                pass
        return '\n'.join(text)

    def cleanup(self):
        """Remove everything this run made; True when all is gone."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_IGN)
        self._unbind_all()
        self.stopping = True
        clean = self._stop_agent()
        if self.bridge is not None:
            # The bridge's ports go with it.
            proc = subprocess.run(['ovs-vsctl', '--if-exists', 'del-br',
                                   self.bridge], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                clean = False
                log('cleanup: could not delete bridge %s: %s', self.bridge,
                    proc.stderr.strip())
        clean = self._delete_leftover_links() and clean
        clean = self._delete_namespaces(self.namespaces) and clean
        if self.transport is not None:
            self.transport.cleanup()
        clean = self._delete_broker_objects() and clean
        for what, close in (
                ('our OVSDB connection',
                 self.switch.stop if self.switch else None),
                ('our netlink socket', self.ipr.close if self.ipr else None)):
            if close is None:
                continue
            try:
                close()
            except Exception as e:
                log('cleanup: closing %s: %s', what, e)
        if self.dir is not None:
            if self.args.keep_log:
                try:
                    shutil.copyfile(self.log_path, self.args.keep_log)
                    log('agent log kept in %s', self.args.keep_log)
                except OSError as e:
                    log('cleanup: could not keep the agent log: %s', e)
            shutil.rmtree(self.dir, ignore_errors=True)
        return clean

    def _unbind_all(self):
        """Have a live agent remove its ports: faster than one by one."""
        if self.proc is None or self.proc.poll() is not None or \
                self.client is None or not self.ids:
            return
        client = client_mod.AgentClient(self.transport, self.host,
                                        topic=self.topic,
                                        timeout=self.unbind_timeout)
        try:
            removed = client.sync_ports([])['removed']
            if removed:
                log('cleanup: the agent removed %d ports', len(removed))
        except Exception as e:
            log('cleanup: the agent did not remove its ports (%s: %s); '
                'deleting them here', type(e).__name__, e)

    def terminate_agent(self, timeout=15):
        """SIGTERM the agent; return its exit code, None if it was killed.

        The watcher stays quiet: this exit is expected.
        """
        self.stopping = True
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log('the agent did not stop on SIGTERM within %ds; killing it',
                timeout)
            self.proc.kill()
            self.proc.wait()
            return None

    def _stop_agent(self):
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.terminate()
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            log('cleanup: the agent did not stop on SIGTERM; killing it')
            self.proc.kill()
            self.proc.wait()
            return True
        if code != 0:
            log('cleanup: the agent exited with %d', code)
        return True

    def _delete_leftover_links(self):
        # Only names derived from port ids this run generated (and checked
        # to be free) can be here: whatever exists of them is ours.
        names = set()
        for pid in self.ids:
            devices = binding.device_names(pid)
            names.update((devices.qbr, devices.qvb, devices.qvo,
                          devices.tap))
        if not names:
            return True
        clean = True
        try:
            ipr = self.ipr if self.ipr is not None else IPRoute()
            left = [msg.get('IFLA_IFNAME') for msg in ipr.link('dump')
                    if msg.get('IFLA_IFNAME') in names]
            # veths first: deleting one end deletes its peer.
            left.sort(key=lambda n: n.startswith(binding.BRIDGE_PREFIX))
            deleted = 0
            for name in left:
                try:
                    ipr.link('del', ifname=name)
                    deleted += 1
                except nl_exc.NetlinkError as e:
                    if e.code != errno.ENODEV:
                        clean = False
                        log('cleanup: could not delete %s: %s', name, e)
            if deleted:
                log('cleanup: deleted %d leftover devices', deleted)
        except Exception as e:
            clean = False
            log('cleanup: could not list or delete devices: %s', e)
        return clean

    def _broker_connection(self, timeout=5):
        host = self.broker()
        return kombu.Connection(
            hostname=host.hostname, port=host.port or 5672,
            userid=host.username, password=host.password,
            virtual_host=self.url.virtual_host or '/',
            transport='pyamqp', connect_timeout=timeout)

    def _delete_broker_objects(self):
        """Delete our queues and exchanges (most are gone already).

        The agent's topic queues and its fanout exchange are auto-delete;
        transient queues (replies, fanout) expire a minute after their
        last consumer. The report exchange never had a queue bound, so
        RabbitMQ never auto-deletes it.
        """
        if self.url is None:
            return True
        queues = (self.topic, '%s.%s' % (self.topic, self.host))
        exchanges = ('%s_fanout' % self.topic,
                     '%s_fanout' % self.report_topic, self.topic)
        clean = True
        try:
            with self._broker_connection() as conn:
                for kind, names in (('queue', queues),
                                    ('exchange', exchanges)):
                    for name in names:
                        # A failed delete closes its channel: one each.
                        channel = conn.channel()
                        try:
                            if kind == 'queue':
                                channel.queue_delete(name)
                            else:
                                channel.exchange_delete(name)
                        except Exception as e:
                            if getattr(e, 'code', None) != 404:
                                clean = False
                                log('cleanup: could not delete %s %s: %s',
                                    kind, name, e)
                        finally:
                            try:
                                channel.close()
                            except Exception:
                                pass
        except Exception as e:
            clean = False
            log('cleanup: broker: %s', e)
        return clean

    def broker(self):
        """The first (usually the only) RabbitMQ host of the URL."""
        return self.url.hosts[0]

    # -- namespaces ---------------------------------------------------------
    @staticmethod
    def _ip_batch(lines):
        proc = subprocess.run(['ip', '-force', '-batch', '-'],
                              input=''.join(line + '\n' for line in lines),
                              capture_output=True, text=True)
        return proc.returncode, proc.stderr.strip()

    def make_namespaces(self, count):
        names = []
        for _ in range(count):
            self.ns_count += 1
            names.append('%s-%d' % (self.topic, self.ns_count))
        self.namespaces.update(names)
        code, err = self._ip_batch('netns add ' + n for n in names)
        if code != 0:
            raise BenchmarkError('could not create namespaces: %s' % err)
        return names

    def _delete_namespaces(self, names):
        names = sorted(n for n in names
                       if os.path.exists(os.path.join('/run/netns', n)))
        if not names:
            return True
        code, err = self._ip_batch('netns del ' + n for n in names)
        left = [n for n in names
                if os.path.exists(os.path.join('/run/netns', n))]
        self.namespaces.difference_update(set(names) - set(left))
        if left:
            log('cleanup: could not delete %d namespaces: %s', len(left),
                err)
            return False
        return True

    # -- ports and checks ---------------------------------------------------
    def new_ports(self, count):
        """Fresh ports whose device names nothing on the host uses."""
        taken = {msg.get('IFLA_IFNAME') for msg in self.ipr.link('dump')}
        taken.update(self.switch.ports())
        # The agent refuses two ports sharing device names (an 11
        # character prefix), so none of ours may share one either.
        keys = {pid[:binding.NIC_NAME_LEN - 3] for pid in self.ids}
        netns = (self.make_namespaces(count) if self.args.netns
                 else [None] * count)
        ports = []
        while len(ports) < count:
            pid = str(uuid.uuid4())
            names = binding.device_names(pid)
            key = pid[:binding.NIC_NAME_LEN - 3]
            if {names.tap, names.qbr, names.qvb, names.qvo} & taken or \
                    key in keys:
                continue
            keys.add(key)
            self.ids.add(pid)
            mac = 'fa:16:3e:%02x:%02x:%02x' % tuple(
                random.getrandbits(8) for _ in range(3))
            ports.append(Port(pid, mac, str(uuid.uuid4()),
                              netns[len(ports)]))
        return ports

    def binding(self, port):
        data = {'port_id': port.port_id,
                'mac_address': port.mac,
                'instance_uuid': port.instance_uuid,
                'network_id': self.network_id,
                'mtu': MTU}
        if port.netns:
            data.update(vif_type=binding.VIF_TYPE_NETNS, netns=port.netns)
        return data

    def expect_reply(self, reply, port, what):
        """Abort unless a bind reply says the chain is complete."""
        if not isinstance(reply, dict) or reply.get('port_id') != \
                port.port_id:
            raise BenchmarkError('%s: reply for %s is %r' % (
                what, port.port_id, reply))
        if reply.get('status') != self.expected:
            raise BenchmarkError('%s: %s is %s, not %s: %s' % (
                what, port.port_id, reply.get('status'), self.expected,
                reply.get('reason')))

    def _wait_for(self, find_problems, ports, what):
        plug.wait_for(self.ipr, self.switch, find_problems, ports, what)

    def check_chains(self, ports, what):
        def problems(ports, links, ovs_ports):
            found = plug.chain_problems(ports, self.bridge, links,
                                        ovs_ports)
            for port in ports:
                if not port.netns:
                    continue
                tap = links.get(port.names.tap)
                qbr = links.get(port.names.qbr)
                if tap is None or qbr is None or \
                        tap.get('IFLA_MASTER') != qbr['index']:
                    found.append('%s: tap %s is not in %s' % (
                        port.port_id, port.names.tap, port.names.qbr))
            return found
        self._wait_for(problems, ports, what)

    def check_gone(self, ports, what):
        def problems(ports, links, ovs_ports):
            found = plug.leftover_problems(ports, links, ovs_ports)
            found.extend('%s: %s still exists' % (p.port_id, p.names.tap)
                         for p in ports if p.names.tap in links)
            return found
        self._wait_for(problems, ports, what)

    # -- what a benchmark adds ----------------------------------------------
    def run(self):
        raise NotImplementedError()

    def report(self):
        raise NotImplementedError()


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def _agent_exited(signum, frame):
    raise AgentExited('vifagent-agent exited during the run')


def main(bench):
    """Set up, run, clean up (always), then report; return the status."""
    if os.geteuid() != 0:
        log('error: run as root (the agent creates network devices)')
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGUSR1, _agent_exited)
    status = 0
    try:
        bench.setup()
        bench.run()
    except BenchmarkError as e:
        log('ABORTED: %s', e)
        if isinstance(e, AgentExited):
            log('agent output:\n%s', bench.agent_output())
        status = 1
    except KeyboardInterrupt:
        log('interrupted')
        status = 130
    except Exception:
        log('ABORTED by an unexpected error:')
        traceback.print_exc()
        if bench.dir is not None:
            log('agent output:\n%s', bench.agent_output())
        status = 1
    finally:
        if not bench.cleanup():
            log('cleanup was incomplete: see the messages above')
            status = status or 3
    if status == 0:
        bench.report()
    return status
