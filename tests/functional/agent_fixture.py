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

"""A real vifagent-agent process, with its own names, for end-to-end tests.

The agent runs from its console script with a config file of its own: a
unique host, RPC and report topics, integration bridge and state
directory. RabbitMQ must be running on 127.0.0.1:5672; when it is not,
the fixture starts it with tools/start-rabbitmq.sh.

With ``broker_proxy=True`` the agent reaches RabbitMQ through a relay of
its own (``broker_proxy``, a SocketProxy) while the fixture's client and
any report listener a test makes connect directly, so a test can take the
broker away from this agent only: the shared RabbitMQ is never stopped.

With ``transport_url`` the agent, the fixture's client and ``ctl`` use
that broker instead (a private one a test started, say). The client then
reads its messaging options from the agent's own config file, so TLS
options given in ``sections`` (``oslo_messaging_rabbit``) apply to both
sides.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid

import fixtures
from oslo_config import cfg
from oslo_messaging import conffixture as messaging_conffixture
from testtools import content

from tests.functional import base
from tests.functional import proxy as proxy_mod
from vifagent import exception
from vifagent import rpc
from vifagent.rpc import client as client_mod

TRANSPORT_URL = os.environ.get('VIFAGENT_TRANSPORT_URL',
                               'rabbit://guest:guest@127.0.0.1:5672/')
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def ensure_rabbitmq():
    try:
        socket.create_connection(('127.0.0.1', 5672), timeout=1).close()
        return
    except OSError:
        pass
    subprocess.run([os.path.join(TOP, 'tools', 'start-rabbitmq.sh')],
                   check=True, capture_output=True)


def broker_address(url):
    """``(host, port)`` of the one broker a transport URL names."""
    parts = urllib.parse.urlsplit(url)
    if ',' in parts.netloc:
        raise ValueError('one broker expected in %s' % url)
    return parts.hostname, parts.port or 5672


def via_port(url, port):
    """``url`` with its broker replaced by 127.0.0.1:``port``."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition('@')
    return urllib.parse.urlunsplit(parts._replace(
        netloc='%s%s127.0.0.1:%d' % (userinfo, at, port)))


def script(name):
    """The console script installed beside this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


class AgentFixture(fixtures.Fixture):
    """Writes a config, starts vifagent-agent, waits until it answers."""

    def __init__(self, report_interval=30, sections=None, libvirt=False,
                 broker_proxy=False, transport_url=None, netns=None,
                 faults=None, new_session=False,
                 **agent_options):
        # libvirt connects the agent to libvirtd. Off, tests of the chain
        # alone need no libvirtd and are not disturbed by its restarts.
        super().__init__()
        self.report_interval = report_interval
        self.libvirt = libvirt
        self.use_broker_proxy = broker_proxy
        self.transport_url = transport_url
        # Run the agent in this network namespace (a PrivateOvs's); it
        # then reaches the broker through a relay listening in there.
        self.netns = netns
        # Each start in a process group of its own, as systemd starts a
        # service: oslo.messaging's queue manager then names the fanout
        # queue the same at every start.
        self.new_session = new_session
        self.agent_options = agent_options
        self.sections = sections or {}
        self.faults = faults

    def _setUp(self):
        url = self.transport_url or TRANSPORT_URL
        if self.transport_url is None:
            ensure_rabbitmq()
        suffix = uuid.uuid4().hex[:8]
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.host = 'e2e-' + suffix
        self.topic = 'vifagent-' + suffix
        self.report_topic = 'vifagent-reports-' + suffix
        self.bridge = 'br-' + suffix
        self.config = os.path.join(self.dir, 'vifagent.conf')
        self.log_path = os.path.join(self.dir, 'agent.log')
        self._log_start = 0
        self.broker_proxy = None
        agent_url = url
        if self.use_broker_proxy or self.netns:
            self.broker_proxy = proxy_mod.SocketProxy(broker_address(url),
                                                      netns=self.netns)
            self.addCleanup(self.broker_proxy.cut)
            agent_url = via_port(url, self.broker_proxy.port)
        # Tests stand in for VMs with network namespaces: netns ports on,
        # for the names base.make_netns() gives (vifagent-test-...).
        agent = dict(rpc_topic=self.topic, report_topic=self.report_topic,
                     state_path=os.path.join(self.dir, 'state'),
                     report_interval=self.report_interval,
                     netns_ports='true', netns_allowed='vifagent-test-*')
        agent.update(self.agent_options)
        sections = {
            'DEFAULT': dict(host=self.host, transport_url=agent_url,
                            log_file=self.log_path),
            'agent': agent,
            'ovs': dict(integration_bridge=self.bridge,
                        datapath_type='netdev'),
            'libvirt': dict(enabled=str(self.libvirt).lower(),
                            reconnect_backoff_cap=2),
        }
        if self.libvirt:
            from tests.functional import libvirt_fixture
            self.useFixture(libvirt_fixture.LibvirtInUse())
        for section, options in self.sections.items():
            sections.setdefault(section, {}).update(options)
        with open(self.config, 'w') as f:
            for section, options in sections.items():
                f.write('[%s]\n' % section)
                f.writelines('%s = %s\n' % kv for kv in options.items())
        self.addCleanup(base.run, ['ovs-vsctl', '--if-exists', 'del-br',
                                   self.bridge], False)
        self.transport = rpc.get_transport(self._client_conf(), url=url)
        self.addCleanup(self.transport.cleanup)
        self.client = client_mod.AgentClient(self.transport, self.host,
                                             topic=self.topic, timeout=30)
        self.proc = None
        self.addCleanup(self.kill)
        self.start(faults=self.faults)

    def _client_conf(self):
        """The options the fixture's client connects with.

        The process's global options for the shared broker; for a broker
        of the test's own, the agent's config file read into options of
        the client's own, so its [oslo_messaging_rabbit] settings (TLS)
        are the client's too, and the global options stay untouched.
        """
        if self.transport_url is None:
            return cfg.CONF
        conf = cfg.ConfigOpts()
        conf([], project='vifagent', default_config_files=[self.config],
             default_config_dirs=[])
        # Registers every oslo.messaging option on these options too: the
        # RPC client reads some ([oslo_messaging_tracing]) that the
        # library registers on the global options only.
        self.useFixture(messaging_conffixture.ConfFixture(conf))
        return conf

    def start(self, timeout=60, wait=True, faults=None):
        """Start the agent; with ``wait``, until it answers a call.

        Without ``wait`` it returns at once: an agent whose broker is away
        does not answer calls, but it repairs, and serves /healthz.
        ``faults`` arms fault points (a VIFAGENT_FAULTS value) for this
        run; each acts once across this run's processes (its privsep
        daemons included).
        """
        self._log_start = self._log_size()
        env = dict(os.environ)
        env.pop('VIFAGENT_FAULTS', None)
        if faults:
            once = os.path.join(self.dir, 'faults-%d' % time.monotonic_ns())
            os.mkdir(once)
            env.update(VIFAGENT_FAULTS=faults, VIFAGENT_FAULTS_ONCE=once)
        with open(os.path.join(self.dir, 'agent.stderr'), 'ab') as err:
            prefix = ['ip', 'netns', 'exec', self.netns] if self.netns \
                else []
            self.proc = subprocess.Popen(
                prefix + [script('vifagent-agent'), '--config-file',
                          self.config],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=self.new_session)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        quick = client_mod.AgentClient(self.transport, self.host,
                                       topic=self.topic, timeout=2)
        while True:
            if self.proc.poll() is not None:
                raise AssertionError('vifagent-agent exited with %s:\n%s' % (
                    self.proc.returncode, self.log()))
            try:
                return quick.get_agent_state()
            except exception.VifAgentException:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError('agent not ready:\n' + self.log())

    def log(self, limit=4000):
        """The end of the agent's log (of every run of this fixture)."""
        try:
            with open(self.log_path) as f:
                return f.read()[-limit:]
        except OSError:
            return ''

    def _log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, pattern, timeout=30):
        """The first match of ``pattern`` in the log of the latest start."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            try:
                with open(self.log_path, 'rb') as f:
                    f.seek(self._log_start)
                    match = regex.search(f.read().decode('utf-8',
                                                         'replace'))
            except OSError:
                match = None
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError('vifagent-agent exited with %s:\n%s' % (
                    self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError('no %r in the agent log:\n%s' % (
                    pattern, self.log()))
            time.sleep(0.1)

    def metrics_url(self, timeout=30):
        """The metrics and health URL of the latest start, from its log.

        Found without RPC, so also while the agent's broker is away.
        """
        return self.wait_log(r'Metrics and health on (http://\S+/)',
                             timeout).group(1)

    def attach_log_on_failure(self, test):
        """Add the agent's log (and stderr) to ``test``'s failure details.

        The log is read when the test fails, before the fixture's cleanup
        removes it, and stestr prints it with the traceback.
        """
        def attach(exc_info):
            test.addDetail('agent.log', content.text_content(
                self.log(limit=60000)))
            try:
                with open(os.path.join(self.dir, 'agent.stderr')) as f:
                    stderr = f.read()[-8000:]
            except OSError:
                stderr = ''
            if stderr:
                test.addDetail('agent.stderr', content.text_content(stderr))
        test.addOnException(attach)

    def terminate(self, timeout=15):
        """SIGTERM; return the exit code (the agent must stop quickly)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def ctl(self, *args, check=True):
        """Run vifagent-ctl against this agent; return the process."""
        proc = subprocess.run(
            [script('vifagent-ctl'), '--config-file', self.config] +
            list(args), capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError('vifagent-ctl %s: %d %s' % (
                ' '.join(args), proc.returncode, proc.stderr))
        return proc
