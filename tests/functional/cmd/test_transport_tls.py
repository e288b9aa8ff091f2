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

"""End to end: the agent's two transports over mutual TLS.

README, "Transport security": OVSDB over ``ssl:`` with ``[ovs]
ssl_key_file``, ``ssl_cert_file`` and ``ssl_ca_cert_file``, and RabbitMQ
over TLS with oslo.messaging's ``[oslo_messaging_rabbit]`` options. Both
are tested against servers of the test's own (``tests.functional.tls``)
with a CA the test makes with openssl: the host's ovsdb-server and the
shared RabbitMQ are never reconfigured.

A real ``vifagent-agent`` process is the client each time. The agent
holds one OVSDB connection per process (``vifagent.dataplane.ovs._Api``)
and python-ovs keeps its TLS files per process too, so a process of its
own is also what lets these tests use other servers and certificates
than the rest of the suite.
"""

import os
import ssl
import subprocess
import time
import uuid

import amqp
import fixtures
from testtools import content

from tests.functional import agent_fixture
from tests.functional import base
from tests.functional import tls
from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)

#: An agent refused at start must exit within this.
EXIT_WITHIN = 30
#: The agent's first full pass creates its bridge within this.
BRIDGE_WITHIN = 30


def write_config(path, sections):
    with open(path, 'w') as f:
        for section, options in sections.items():
            f.write('[%s]\n' % section)
            f.writelines('%s = %s\n' % kv for kv in options.items())


class TestOvsdbTls(base.RootTestCase):
    """The agent on an ovsdb-server whose only TCP remote is ``pssl:``.

    What the agent wrote is read back through the server's unix socket
    with ovs-vsctl, not through the agent.
    """

    def setUp(self):
        super().setUp()
        self.pki = self.useFixture(tls.Pki())
        self.ovsdb = self.useFixture(tls.PrivateOvsdb(self.pki))
        self.addOnException(self._attach_server_log)
        self.remote = 'ssl:127.0.0.1:%d' % self.ovsdb.port

    def _attach_server_log(self, exc_info):
        self.addDetail('ovsdb-server.log',
                       content.text_content(self.ovsdb.log()))

    def ovs_options(self, key, cert, ca_cert):
        options = {'ovsdb_connection': self.remote}
        for name, path in (('ssl_key_file', key), ('ssl_cert_file', cert),
                           ('ssl_ca_cert_file', ca_cert)):
            if path is not None:
                options[name] = path
        return options

    def bridge_on_private_db(self, bridge):
        """The bridge's row on the private server, or None."""
        proc = self.ovsdb.vsctl('--columns=name,datapath_type', '--format',
                                'csv', '--no-headings', 'list', 'Bridge',
                                bridge, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def run_refused_agent(self, **ovs_options):
        """Run vifagent-agent expecting it to refuse to start.

        Returns its bridge, exit code and log (with stderr).
        """
        d = self.useFixture(fixtures.TempDir()).path
        suffix = uuid.uuid4().hex[:8]
        bridge = 'br-' + suffix
        log = os.path.join(d, 'agent.log')
        config = os.path.join(d, 'vifagent.conf')
        ovs = dict(integration_bridge=bridge, datapath_type='netdev')
        ovs.update(ovs_options)
        write_config(config, {
            'DEFAULT': {'host': 'tls-' + suffix, 'log_file': log,
                        'transport_url': agent_fixture.TRANSPORT_URL},
            'agent': {'state_path': os.path.join(d, 'state')},
            'ovs': ovs,
            'libvirt': {'enabled': 'false'},
        })
        self.addCleanup(base.run, ['ovs-vsctl', '--if-exists', 'del-br',
                                   bridge], False)
        try:
            proc = subprocess.run(
                [agent_fixture.script('vifagent-agent'), '--config-file',
                 config], capture_output=True, text=True,
                timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            self.fail('the agent did not refuse to start:\n' +
                      tls.tail(log))
        return bridge, proc.returncode, tls.tail(log) + proc.stderr

    def test_agent_writes_and_reads_over_tls(self):
        """The agent creates its bridge on the private server over TLS."""
        key, cert = self.pki.issue('vifagent-agent')
        agent = self.useFixture(agent_fixture.AgentFixture(sections={
            'ovs': self.ovs_options(key, cert, self.pki.ca_cert)}))
        agent.attach_log_on_failure(self)
        row = tls.wait_for(lambda: self.bridge_on_private_db(agent.bridge),
                           BRIDGE_WITHIN, 'bridge on the private ovsdb')
        self.assertEqual('%s,netdev' % agent.bridge, row)
        # Written there and only there: the host's server never saw it.
        self.assertEqual(2, subprocess.run(
            ['ovs-vsctl', 'br-exists', agent.bridge]).returncode)
        # The first full pass, which reads the IDL replica kept over the
        # same TLS session, went through.
        state = agent.client.get_agent_state()
        self.assertEqual(agent.host, state['host'])
        self.assertIs(True, state['reconcile']['last_full_pass_ok'])

    def assertNeverConnects(self, **ovs_options):
        """The agent runs and serves, but OVSDB never takes it.

        A server the TLS handshake fails with is, to the agent, an OVSDB
        it cannot reach: it keeps trying (as after an OVS outage) and
        says why in its log; nothing is ever written there.
        """
        agent = self.useFixture(agent_fixture.AgentFixture(
            sections={'ovs': ovs_options}))
        agent.attach_log_on_failure(self)
        agent.wait_log('Could not retrieve schema from %s' % self.remote)
        agent.wait_log('OVSDB %s cannot be reached' % self.remote)
        self.assertEqual(agent.host, agent.client.get_agent_state()['host'])
        self.assertIsNone(agent.proc.poll())
        self.assertIsNone(self.bridge_on_private_db(agent.bridge))

    def test_client_certificate_of_another_ca_is_refused(self):
        key, cert = self.pki.rogue('vifagent-agent')
        self.assertNeverConnects(
            **self.ovs_options(key, cert, self.pki.ca_cert))
        self.assertIn('certificate verify failed', self.ovsdb.log())

    def test_server_certificate_of_another_ca_is_refused(self):
        """The agent authenticates the server, not only the other way."""
        key, cert = self.pki.issue('vifagent-agent')
        self.assertNeverConnects(
            **self.ovs_options(key, cert, self.pki.rogue_ca[1]))

    def test_ssl_without_its_files_is_refused_at_start(self):
        for missing in ('ssl_key_file', 'ssl_cert_file',
                        'ssl_ca_cert_file'):
            key, cert = self.pki.issue('vifagent-agent')
            files = dict(key=key, cert=cert, ca_cert=self.pki.ca_cert)
            files[missing[len('ssl_'):-len('_file')]] = None
            bridge, code, log = self.run_refused_agent(
                **self.ovs_options(**files))
            self.assertNotEqual(0, code, log)
            self.assertIn('%s needs [ovs] ssl_key_file, ssl_cert_file and '
                          'ssl_ca_cert_file; not set: %s' % (
                              self.remote, missing), log)
            self.assertIsNone(self.bridge_on_private_db(bridge))


class TestRabbitTls(base.RootTestCase):
    """The agent and its client on a RabbitMQ node that takes only TLS."""

    def setUp(self):
        super().setUp()
        self.pki = self.useFixture(tls.Pki())
        started = time.monotonic()
        self.rabbit = self.useFixture(tls.PrivateRabbit(self.pki))
        self.addDetail('rabbitmq start seconds', content.text_content(
            '%.1f' % (time.monotonic() - started)))
        self.address = '127.0.0.1:%d' % self.rabbit.port

    def amqp_connect(self, ssl_options):
        """Open and close one AMQP connection to the TLS listener."""
        conn = amqp.Connection(self.address, userid='guest',
                               password='guest', ssl=ssl_options,
                               connect_timeout=5)
        try:
            conn.connect()
        finally:
            conn.collect()

    def tls_options(self, key, cert, ca_cert):
        options = {'ca_certs': ca_cert, 'cert_reqs': ssl.CERT_REQUIRED,
                   'server_hostname': '127.0.0.1'}
        if cert:
            options.update(certfile=cert, keyfile=key)
        return options

    def test_bind_over_tls(self):
        """Agent, client and vifagent-ctl all reach the agent over TLS."""
        key, cert = self.pki.issue('vifagent')
        agent = self.useFixture(agent_fixture.AgentFixture(
            transport_url='rabbit://guest:guest@%s/' % self.address,
            sections={
                'oslo_messaging_rabbit': {
                    'ssl': 'true', 'ssl_ca_file': self.pki.ca_cert,
                    'ssl_cert_file': cert, 'ssl_key_file': key}}))
        agent.attach_log_on_failure(self)
        self.stop_before_cleanup.append(agent.kill)
        data = self.binding_dict(netns=self.make_netns())
        reply = agent.client.bind_port(data)
        self.assertEqual('ACTIVE', reply['status'], reply['reason'])
        shown = agent.ctl('--format', 'json', 'show', data['port_id'])
        self.assertIn('"status": "ACTIVE"', shown.stdout)
        conns = self.rabbit.ctl('-q', 'list_connections', 'ssl',
                                'peer_cert_subject')
        self.assertEqual(0, conns.returncode, conns.stderr)
        rows = [line.split('\t') for line in conns.stdout.splitlines()
                if line.strip() and not line.startswith('ssl')]
        self.assertTrue(rows, conns.stdout)
        for tls_on, subject in rows:
            self.assertEqual(('true', 'CN=vifagent'), (tls_on, subject))

    def test_only_clients_with_a_certificate_of_the_ca_get_in(self):
        """Plain AMQP, no or a foreign client certificate: refused.

        And the client refuses a server its CA did not sign. Each is
        refused at once, by the TLS layer, not by a timeout.
        """
        key, cert = self.pki.issue('client')
        rogue_key, rogue_cert = self.pki.rogue('client')
        ca = self.pki.ca_cert
        # The control: a client with a certificate of the CA gets in.
        self.amqp_connect(self.tls_options(key, cert, ca))
        refused = [
            # The listener speaks TLS only: it drops the AMQP header.
            ('plain AMQP', False, OSError),
            ('TLS, no client certificate',
             self.tls_options(None, None, ca), ssl.SSLError),
            ('TLS, client certificate of another CA',
             self.tls_options(rogue_key, rogue_cert, ca), ssl.SSLError),
            ('TLS, server certificate not of the trusted CA',
             self.tls_options(key, cert, self.pki.rogue_ca[1]),
             ssl.SSLCertVerificationError),
        ]
        for what, options, error in refused:
            started = time.monotonic()
            e = self.assertRaises(OSError, self.amqp_connect, options)
            self.assertIsInstance(e, error, what)
            if error is OSError:
                self.assertNotIsInstance(e, ssl.SSLError, what)
            self.assertLess(time.monotonic() - started, 5, what)
