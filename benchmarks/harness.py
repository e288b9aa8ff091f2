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

"""What the benchmarks share: timing, host setup, checks and cleanup.

``Bench`` takes names nothing on the host uses: an OVS bridge ``br-<hex>``
(userspace datapath), port ids whose device names are free and, for netns
ports, namespaces ``vifagent-bench-<hex>-<n>``. Its checks read netlink
(pyroute2) and an OVSDB replica of its own, never vifagent's code.
``AgentBench`` adds a ``vifagent-agent`` process (the console script
beside this interpreter) with host ``bench-<hex>``, RPC topic and control
exchange ``vifagent-bench-<hex>`` and a temporary state directory.
``main()`` always cleans up, on failure and Ctrl-C too: the agent and its
privsep daemons, the bridge, every device of the generated port ids, the
namespaces, the broker queues and exchanges, the directory. Nothing else
is touched, so a benchmark can run beside other tests.
"""

import argparse
import collections
import errno
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.schema.open_vswitch import impl_idl
from pyroute2 import IPRoute
from pyroute2.netlink import exceptions as nl_exc

from vifagent import binding

TRANSPORT_URL = os.environ.get('VIFAGENT_TRANSPORT_URL',
                               'rabbit://guest:guest@127.0.0.1:5672/')
DATAPATH, MTU, DOWN, ACTIVE = 'netdev', 1500, 'DOWN', 'ACTIVE'
CHECK_TIMEOUT = 10.0   # for the kernel and OVSDB to show what a call did
START_TIMEOUT = 60.0   # for the agent to serve
QUEUE_GONE_TIMEOUT = 15
READY_POLL = 0.01      # seconds between two looks for the agent's queue


class BenchmarkError(Exception):
    """A result is wrong: the run stops, its numbers mean nothing."""


def log(msg, *args):
    print(msg % args if args else msg, file=sys.stderr, flush=True)


def positive(text):
    if int(text) < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return int(text)


def make_parser(module, counts, ovsdb_help='OVSDB server'):
    """Arguments: ``counts`` (flag, default, help) are positive integers."""
    parser = argparse.ArgumentParser(
        prog='python -m ' + module.__name__,
        description=module.__doc__.split('\n\n')[0] + ' Run as root.')
    for flag, default, text in counts:
        parser.add_argument(flag, type=positive, default=default,
                            help='%s (default %d)' % (text, default))
    parser.add_argument('--ovsdb', default='tcp:127.0.0.1:6640',
                        help=ovsdb_help + ' (default tcp:127.0.0.1:6640)')
    return parser


def percentile(values, pct):
    """The nearest-rank percentile of ``values`` (pct in 0..100)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100.0 * len(ordered))) - 1]


def spread(values):
    """(median, min, max) of ``values``."""
    return statistics.median(values), min(values), max(values)


def timed(func, *args):
    """(func(*args), the seconds it took)."""
    start = time.perf_counter()
    result = func(*args)
    return result, time.perf_counter() - start


class Port(collections.namedtuple('Port', 'port_id mac instance_uuid netns')):

    @property
    def names(self):
        return binding.device_names(self.port_id)


class _Api(impl_idl.OvsdbIdl):
    """ovsdbapp's API, its connection kept per instance, not per class.

    The benchmark's replica must neither lend its connection to vifagent
    or os-vif nor borrow theirs.
    """

    ovsdb_connection = property(lambda self: self._own,
                                lambda self, conn: setattr(self, '_own', conn))


class Switch:
    """The benchmark's own OVSDB replica."""

    COLUMNS = {
        'Open_vSwitch': ['bridges', 'cur_cfg', 'next_cfg', 'ovs_version'],
        'Bridge': ['name', 'ports'],
        'Port': ['name', 'interfaces'],
        'Interface': ['name', 'external_ids', 'ofport'],
    }

    def __init__(self, remote):
        helper = idlutils.get_schema_helper(remote, 'Open_vSwitch')
        for table, columns in self.COLUMNS.items():
            helper.register_columns(table, columns)
        self.conn = connection.Connection(connection.OvsdbIdl(remote, helper),
                                          timeout=30)
        self.api = _Api(self.conn)

    def rows(self, table):
        with self.conn.lock:
            return list(self.api.tables[table].rows.values())

    def version(self):
        return next((r.ovs_version or ['(version unset)'] for r in self.rows(
            'Open_vSwitch')), ['(version unknown)'])[0]

    def ports(self):
        """Return ``{port name: (bridge, iface external_ids, ofport)}``."""
        with self.conn.lock:
            tables = self.api.tables
            owner = {p.uuid: b.name for b in tables['Bridge'].rows.values()
                     for p in b.ports}
            return {p.name: (owner.get(p.uuid), dict(
                p.interfaces[0].external_ids) if p.interfaces else {},
                (p.interfaces[0].ofport or [None])[0] if p.interfaces
                else None) for p in tables['Port'].rows.values()}


def _kind(msg):
    info = msg.get('IFLA_LINKINFO')
    return info.get('IFLA_INFO_KIND') if info is not None else None


def ip_batch(command, names):
    """``ip <command> <name>`` for each name; False when one failed."""
    proc = subprocess.run(['ip', '-force', '-batch', '-'], text=True,
                          input=''.join('%s %s\n' % (command, n)
                                        for n in names), capture_output=True)
    if proc.returncode:
        log('ip %s: %s', command, proc.stderr.strip())
    return proc.returncode == 0


class Bench:
    """Fresh names on this host, independent checks, and their cleanup."""

    switch_class = Switch
    check_timeout = CHECK_TIMEOUT   # seconds wait_for waits

    def __init__(self, args):
        self.args, self.netns = args, getattr(args, 'netns', False)
        self.network_id = str(uuid.uuid4())
        self.loadavg = os.getloadavg()
        self.suffix = self.bridge = self.ipr = self.switch = None
        self.ids, self.namespaces = set(), []   # what cleanup removes

    def setup(self):
        self.ipr = IPRoute()
        self.switch = self.switch_class(self.args.ovsdb)
        bridges = {b.name for b in self.switch.rows('Bridge')}
        while self.bridge is None:
            suffix = '%08x' % random.getrandbits(32)
            if 'br-' + suffix not in bridges and \
                    not self.ipr.link_lookup(ifname='br-' + suffix):
                self.suffix, self.bridge = suffix, 'br-' + suffix

    def new_ports(self, count):
        """Fresh ports whose device names nothing on the host uses."""
        taken = {msg.get('IFLA_IFNAME') for msg in self.ipr.link('dump')}
        taken.update(self.switch.ports())
        # The agent refuses two ports sharing device names (an 11
        # character prefix), so none of ours may share one either.
        keys = {binding.name_key(pid) for pid in self.ids}
        ports = []
        while len(ports) < count:
            pid = str(uuid.uuid4())
            if binding.name_key(pid) in keys or \
                    taken.intersection(binding.device_names(pid).all()):
                continue
            keys.add(binding.name_key(pid))
            self.ids.add(pid)
            netns = None
            if self.netns:
                netns = 'vifagent-bench-%s-%d' % (self.suffix,
                                                  len(self.namespaces) + 1)
                self.namespaces.append(netns)
            ports.append(Port(pid, 'fa:16:3e:%02x:%02x:%02x' % tuple(
                random.getrandbits(8) for _ in range(3)), str(uuid.uuid4()),
                netns))
        if self.netns and not ip_batch('netns add', [p.netns for p in ports]):
            raise BenchmarkError('could not create namespaces')
        return ports

    def delete_namespaces(self, names):
        left = [n for n in names if os.path.exists('/run/netns/' + n)]
        return not left or ip_batch('netns del', left)

    # -- independent checks ---------------------------------------------
    def wait_for(self, find_problems, ports, what):
        """Poll links and OVS ports until ``find_problems`` finds none."""
        deadline = time.monotonic() + self.check_timeout
        while True:
            links = {m.get('IFLA_IFNAME'): m for m in self.ipr.link('dump')}
            problems = find_problems(ports, links, self.switch.ports())
            if not problems:
                return
            if time.monotonic() > deadline:
                raise BenchmarkError('%s: %d problems; first: %s' % (
                    what, len(problems), '; '.join(problems[:3])))
            time.sleep(0.05)

    def check_chains(self, ports, what):
        # qbr holds qvb (and a netns port's tap), qvo is qvb's peer and on
        # our bridge with the port's iface-id and an ofport.
        def problems(ports, links, ovs_ports):
            found = []
            for port in ports:
                n = port.names
                qbr, qvb, qvo, tap = map(links.get, (n.qbr, n.qvb, n.qvo,
                                                     n.tap))
                ovs = ovs_ports.get(n.qvo)
                if qbr is None or _kind(qbr) != 'bridge':
                    problem = 'no bridge %s' % n.qbr
                elif qvb is None or _kind(qvb) != 'veth':
                    problem = 'no veth %s' % n.qvb
                elif qvb.get('IFLA_MASTER') != qbr['index']:
                    problem = '%s is not in %s' % (n.qvb, n.qbr)
                elif qvo is None or _kind(qvo) != 'veth':
                    problem = 'no veth %s' % n.qvo
                elif qvo.get('IFLA_LINK') != qvb['index']:
                    problem = '%s is not the peer of %s' % (n.qvo, n.qvb)
                elif ovs is None or ovs[0] != self.bridge:
                    problem = 'no OVS port %s on %s' % (n.qvo, self.bridge)
                elif ovs[1].get('iface-id') != port.port_id:
                    problem = 'OVS port %s has iface-id %s' % (
                        n.qvo, ovs[1].get('iface-id'))
                elif not ovs[2] or ovs[2] < 0:
                    problem = 'OVS port %s has no ofport' % n.qvo
                elif port.netns and (tap is None or tap.get(
                        'IFLA_MASTER') != qbr['index']):
                    problem = 'tap %s is not in %s' % (n.tap, n.qbr)
                else:
                    continue
                found.append('%s: %s' % (port.port_id, problem))
            return found
        self.wait_for(problems, ports, what)

    def check_gone(self, ports, what):
        """Nothing is left of the ports' chains."""
        self.wait_for(lambda ports, links, ovs_ports: [
            '%s: %s still exists' % (p.port_id, name) for p in ports
            for name in p.names.all() if name in links] + [
            '%s: OVS port %s still exists' % (p.port_id, p.names.qvo)
            for p in ports if p.names.qvo in ovs_ports], ports, what)

    # -- cleanup ----------------------------------------------------------
    def cleanup(self):
        """Remove what this run made; True when all of it is gone."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        clean = True
        if self.bridge is not None:
            # The bridge's ports go with it.
            proc = subprocess.run(['ovs-vsctl', '--if-exists', 'del-br',
                                   self.bridge], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                clean = False
                log('cleanup: could not delete bridge %s: %s', self.bridge,
                    proc.stderr.strip())
        # Only names of port ids this run generated (and found free) are
        # deleted: whatever exists of them is ours. qbr last: deleting one
        # end of a veth deletes its peer.
        names = {name for pid in self.ids
                 for name in binding.device_names(pid).all()}
        try:
            left = sorted((m.get('IFLA_IFNAME') for m in self.ipr.link('dump')
                           if m.get('IFLA_IFNAME') in names),
                          key=lambda n: n.startswith(binding.BRIDGE_PREFIX))
            for name in left:
                try:
                    self.ipr.link('del', ifname=name)
                except nl_exc.NetlinkError as e:
                    if e.code != errno.ENODEV:
                        clean = False
                        log('cleanup: could not delete %s: %s', name, e)
            if left:
                log('cleanup: deleted %d leftover devices', len(left))
        except Exception as e:
            clean = False
            log('cleanup: could not list or delete devices: %s', e)
        clean = self.delete_namespaces(self.namespaces) and clean
        for close in (self.switch and self.switch.conn.stop,
                      self.ipr and self.ipr.close):
            try:
                if close:
                    close()
            except Exception as e:
                log('cleanup: closing a connection: %s', e)
        return clean


class AgentBench(Bench):
    """A vifagent-agent process of its own, its RPC client, its cleanup."""

    agent_options = {}   # more [agent] options of its configuration
    sections = {}        # more sections of its configuration: {name: {}}

    def __init__(self, args):
        super().__init__(args)
        self.host = self.topic = self.dir = self.proc = self.url = None
        self.transport = self.client = self.started_in = None
        self.ready_retries = 0
        self.expected = ACTIVE if self.netns else DOWN
        self.vif_type = (binding.VIF_TYPE_NETNS if self.netns
                         else binding.VIF_TYPE_OVS_HYBRID)

    @staticmethod
    def parser(module, counts):
        parser = make_parser(module, counts + (
            ('--timeout', 120, 'seconds to wait for any one reply'),),
            'OVSDB server for the agent and the checks')
        parser.add_argument('--transport-url', default=TRANSPORT_URL,
                            help='RabbitMQ (default $VIFAGENT_TRANSPORT_URL '
                                 'or rabbit://guest:guest@127.0.0.1:5672/)')
        return parser

    def path(self, name):
        return os.path.join(self.dir, name)

    def setup(self):
        super().setup()
        args = self.args
        self.host = 'bench-' + self.suffix
        self.topic = 'vifagent-bench-' + self.suffix
        self.queue = '%s.%s' % (self.topic, self.host)   # the agent's own
        self.dir = tempfile.mkdtemp(prefix='vifagent-bench-')
        config = {
            # Our own exchange: nothing we declare can clash with what
            # other agents on this broker declared.
            'DEFAULT': dict(host=self.host, transport_url=args.transport_url,
                            control_exchange=self.topic,
                            log_file=self.path('agent.log')),
            'agent': dict(self.agent_options, rpc_topic=self.topic,
                          report_topic=self.topic + '-reports',
                          state_path=self.path('state')),
            'ovs': dict(ovsdb_connection=args.ovsdb, datapath_type=DATAPATH,
                        integration_bridge=self.bridge),
            # Queues and exchanges go away with their consumers.
            'oslo_messaging_rabbit': dict(amqp_auto_delete='true',
                                          rabbit_transient_queues_ttl=60)}
        if self.netns:
            # Off by default; our namespaces match its default patterns.
            config['agent']['netns_ports'] = 'true'
        for section, options in self.sections.items():
            config.setdefault(section, {}).update(options)
        with open(self.path('vifagent.conf'), 'w') as f:
            for section, options in config.items():
                f.write('[%s]\n' % section + ''.join(
                    '%s = %s\n' % kv for kv in options.items()))
        # Imported here: importing vifagent first makes oslo.messaging's
        # service backend threads, not eventlet.
        from oslo_config import cfg
        import oslo_messaging
        from vifagent import rpc
        # The client reads the same file (broker, exchange) as the global
        # configuration: oslo.messaging's RPC client reads its tracing
        # options from there whatever it is given.
        cfg.CONF(['--config-file', self.path('vifagent.conf')],
                 project='vifagent', default_config_files=[])
        self.transport = rpc.get_transport(cfg.CONF)
        self.url = oslo_messaging.TransportURL.parse(cfg.CONF,
                                                     args.transport_url)
        self.client = self.new_client(args.timeout)
        log('agent %s, topic %s, bridge %s (datapath %s), %s ports',
            self.host, self.topic, self.bridge, DATAPATH, self.vif_type)
        self.start_agent()

    def new_client(self, timeout):
        from vifagent.rpc import client
        return client.AgentClient(self.transport, self.host,
                                  topic=self.topic, timeout=timeout)

    def host_line(self):
        host = self.url.hosts[0]   # the first (usually only) broker
        return 'datapath %s, Open vSwitch %s, kernel %s, %d CPUs, load ' \
            'average %.2f at start; RabbitMQ at %s:%s' % (
                DATAPATH, self.switch.version(), platform.release(),
                os.cpu_count(), self.loadavg[0], host.hostname,
                host.port or 5672)

    def _broker(self):
        import kombu
        host = self.url.hosts[0]
        return kombu.Connection(
            hostname=host.hostname, port=host.port or 5672,
            userid=host.username, password=host.password,
            virtual_host=self.url.virtual_host or '/',
            transport='pyamqp', connect_timeout=5)

    @staticmethod
    def _amqp(conn, method, name, **kwargs):
        """One call on a channel of its own; False if ``name`` is absent."""
        channel = conn.channel()
        try:
            getattr(channel, method)(name, **kwargs)
            return True
        except Exception as e:
            if getattr(e, 'code', None) != 404:
                raise
            return False
        finally:
            try:
                channel.close()
            except Exception:
                pass

    def _wait_queue(self, present, deadline):
        with self._broker() as conn:
            while self._amqp(conn, 'queue_declare', self.queue,
                             passive=True) != present:
                if present:
                    self._expect_running()
                if time.monotonic() > deadline:
                    if present:
                        raise BenchmarkError('agent not serving after %ds:'
                                             '\n%s' % (START_TIMEOUT,
                                                       self.agent_output()))
                    log('queue %s still there %ds after the agent went',
                        self.queue, QUEUE_GONE_TIMEOUT)
                    return
                time.sleep(READY_POLL)

    # -- the agent process ------------------------------------------------
    def start_agent(self):
        """Start the agent; return its first get_agent_state answer.

        The agent declares its queue (auto-delete) as it starts serving:
        polling the broker for it is cheap and precise, where a call sent
        before it exists would be dropped and only time out. A previous
        agent's queue goes shortly after that agent, with any call sent
        to it; only once it is gone is a queue seen the new agent's.
        """
        self._wait_queue(False, time.monotonic() + QUEUE_GONE_TIMEOUT)
        start = time.perf_counter()
        with open(self.path('agent.out'), 'a') as out:
            # A session of its own: Ctrl-C reaches the benchmark only, and
            # the benchmark stops the agent itself.
            self.proc = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable),
                              'vifagent-agent'),
                 '--config-file', self.path('vifagent.conf')],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        client = self.new_client(5)
        state = None
        while state is None:
            self._wait_queue(True, deadline)
            try:
                state = client.get_agent_state()
            except Exception as e:
                self._expect_running()
                if time.monotonic() > deadline:
                    raise BenchmarkError('agent did not answer (%s: %s):\n%s'
                                         % (type(e).__name__, e,
                                            self.agent_output()))
                log('get_agent_state failed (%s: %s); asking again: the '
                    'time to answer is overstated', type(e).__name__, e)
                self.ready_retries += 1
        self.started_in = time.perf_counter() - start
        log('agent pid %d answering after %.1f s', self.proc.pid,
            self.started_in)
        return state

    def _expect_running(self):
        if self.proc.poll() is not None:
            raise BenchmarkError('vifagent-agent exited with %s:\n%s' % (
                self.proc.returncode, self.agent_output()))

    def terminate_agent(self, timeout=15):
        """SIGTERM the agent; its exit code, None if it had to be killed."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log('the agent did not stop on SIGTERM within %ds; killing it',
                timeout)
            self.proc.kill()
            self.proc.wait()
            return None

    def helpers(self):
        """The agent's privsep daemons (they name our config file)."""
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')
                          if self.dir else ()):
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    if self.path('vifagent.conf').encode() in f.read() and \
                            int(pid) not in (os.getpid(),
                                             self.proc and self.proc.pid):
                        found.append(int(pid))
            except OSError:
                continue
        return found

    def agent_output(self):
        text = ''
        for name in ('agent.out', 'agent.log'):
            if os.path.exists(self.path(name)):
                with open(self.path(name), errors='replace') as f:
                    text += f.read()[-3000:] + '\n'
        return text

    # -- requests and their checks ----------------------------------------
    def binding(self, port):
        data = {'port_id': port.port_id, 'mac_address': port.mac,
                'instance_uuid': port.instance_uuid,
                'network_id': self.network_id, 'mtu': MTU}
        if port.netns:
            data.update(vif_type=binding.VIF_TYPE_NETNS, netns=port.netns)
        return data

    def expect_reply(self, reply, port, what):
        """Abort unless a bind reply says the chain is complete."""
        if not isinstance(reply, dict) or \
                reply.get('port_id') != port.port_id:
            raise BenchmarkError('%s: reply for %s is %r' % (
                what, port.port_id, reply))
        if reply.get('status') != self.expected:
            raise BenchmarkError('%s: %s is %s, not %s: %s' % (
                what, port.port_id, reply.get('status'), self.expected,
                reply.get('reason')))

    def expect_synced(self, reply, ports, fresh):
        """Abort unless sync_ports added ``fresh`` and nothing else."""
        if sorted(reply['added']) != sorted(p.port_id for p in fresh) or \
                reply['removed']:
            raise BenchmarkError('sync_ports: added %d of %d, removed %d' % (
                len(reply['added']), len(fresh), len(reply['removed'])))
        replies = {r['port_id']: r for r in reply['ports']}
        for port in ports:
            self.expect_reply(replies.get(port.port_id), port, 'sync_ports')

    def expect_ports(self, state, count, what):
        """Abort unless the agent holds ``count`` ports, all expected."""
        if state['ports'] != count or count and \
                state['ports_by_status'].get(self.expected) != count:
            raise BenchmarkError('%s: agent has %d ports, by status %s' % (
                what, state['ports'], state['ports_by_status']))

    # -- cleanup ----------------------------------------------------------
    def cleanup(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        if self.proc is not None and self.proc.poll() is None:
            try:
                # A live agent removes its ports faster than one by one.
                removed = self.new_client(60 + len(self.ids) // 6).sync_ports(
                    [])['removed'] if self.ids else None
                if removed:
                    log('cleanup: the agent removed %d ports', len(removed))
            except Exception as e:
                log('cleanup: the agent did not remove its ports (%s: %s); '
                    'deleting them here', type(e).__name__, e)
            code = self.terminate_agent()
            if code:
                log('cleanup: the agent exited with %s', code)
        # Its privsep daemons end with their connection to it.
        deadline = time.monotonic() + 5
        while self.helpers() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.helpers():
            log('cleanup: privsep daemon %d outlived the agent; killing it',
                pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        clean = super().cleanup()
        if self.transport is not None:
            self.transport.cleanup()
        if self.url is not None:
            clean = self._delete_broker_objects() and clean
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return clean

    def _delete_broker_objects(self):
        """Delete our queues and exchanges (most are gone already).

        Topic queues and the fanout exchange are auto-delete; transient
        queues expire a minute after their last consumer. The report
        exchange never had a queue bound: RabbitMQ never deletes it.
        """
        try:
            with self._broker() as conn:
                for kind, name in (
                        ('queue', self.topic), ('queue', self.queue),
                        ('exchange', self.topic + '_fanout'),
                        ('exchange', self.topic + '-reports_fanout'),
                        ('exchange', self.topic)):
                    self._amqp(conn, kind + '_delete', name)
            return True
        except Exception as e:
            log('cleanup: broker: %s', e)
            return False


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def main(bench):
    """Set up, run, clean up (always), then report; return the status."""
    if os.geteuid() != 0:
        log('error: run as root (the benchmark creates network devices)')
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    status = 0
    try:
        bench.setup()
        bench.run()
    except BenchmarkError as e:
        log('ABORTED: %s', e)
        status = 1
    except KeyboardInterrupt:
        log('interrupted')
        status = 130
    except Exception:
        log('ABORTED by an unexpected error:')
        traceback.print_exc()
        if getattr(bench, 'dir', None):
            log('agent output:\n%s', bench.agent_output())
        status = 1
    finally:
        if not bench.cleanup():
            log('cleanup was incomplete: see the messages above')
            status = status or 3
    if status == 0:
        bench.report()
    return status
