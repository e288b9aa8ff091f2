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

"""Private servers for functional tests: a CA, ovsdb-server, RabbitMQ.

Transport security is tested against servers the test starts itself, with
certificates it makes itself, so the host's ovsdb-server and the shared
RabbitMQ (which other tests use in parallel) are never reconfigured:

* ``Pki``: a throw-away CA made with openssl, certificates it signs for
  servers and clients, and ``rogue`` ones signed by a CA nobody trusts;
* ``PrivateOvsdb``: an ovsdb-server on a database of its own, with a
  ``pssl:`` remote on 127.0.0.1 and a unix socket for checking what was
  written; a thread stands in for ovs-vswitchd (which it has none of) by
  acknowledging each new configuration, as transactions wait for that;
* ``PrivateRabbit``: a RabbitMQ node of its own (own node name, ports,
  cookie and data) with only a TLS listener, which requires a client
  certificate signed by the CA; or, without a Pki, a plain one, which a
  test may stop and start again.

Each stops its server and removes its files in cleanups that run even
when the test fails.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import fixtures

SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'

# The node's own scripts: Debian's wrappers on PATH would run the node as
# the rabbitmq user, with that user's cookie and no access to our files.
RABBITMQ_BIN = '/usr/lib/rabbitmq/bin'

#: Seconds a private RabbitMQ node may take to start (a few usually).
RABBITMQ_START_TIMEOUT = 60

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise AssertionError('%s failed (%d): %s' % (
            ' '.join(cmd), proc.returncode, proc.stderr.strip()))
    return proc.stdout


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on at this moment."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.1):
    """Poll ``predicate`` until it returns a true value; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('%s: not within %s s' % (what, timeout))
        time.sleep(interval)


def tail(path, limit=4000):
    try:
        with open(path, errors='replace') as f:
            return f.read()[-limit:]
    except OSError:
        return ''


class Pki(fixtures.Fixture):
    """A CA of the test's own and the certificates it issues.

    Keys are ECDSA P-256 (quick to make; OpenSSL, Python and Erlang all
    take them). Every certificate names 127.0.0.1 and localhost, so a
    client checking the server's name accepts it on loopback.
    """

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.config = os.path.join(self.dir, 'openssl.cnf')
        with open(self.config, 'w') as f:
            f.write(_OPENSSL_CONFIG)
        self._issued = 0
        self.ca_key, self.ca_cert = self._make_ca('ca', 'vifagent test CA')
        self._rogue_ca = None

    def _paths(self, name, *suffixes):
        """Fresh file names for ``name``: nothing issued is overwritten."""
        self._issued += 1
        stem = os.path.join(self.dir, '%s-%d' % (name, self._issued))
        return [stem + s for s in suffixes]

    def _key_args(self, key):
        return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                '-nodes', '-keyout', key]

    def _make_ca(self, name, cn):
        key, cert = self._paths(name, '.key', '.pem')
        _run(['openssl', 'req', '-x509', '-config', self.config,
              '-extensions', 'ca', '-days', '2', '-subj', '/CN=' + cn,
              '-out', cert] + self._key_args(key))
        return key, cert

    def issue(self, name, ca=None):
        """``(key, cert)`` for ``name``, signed by our CA (or ``ca``)."""
        ca_key, ca_cert = ca or (self.ca_key, self.ca_cert)
        key, csr, cert = self._paths(name, '.key', '.csr', '.pem')
        _run(['openssl', 'req', '-new', '-config', self.config,
              '-subj', '/CN=' + name, '-out', csr] + self._key_args(key))
        _run(['openssl', 'x509', '-req', '-in', csr, '-CA', ca_cert,
              '-CAkey', ca_key, '-set_serial', str(secrets.randbits(63)),
              '-days', '2', '-extfile', self.config, '-extensions', 'leaf',
              '-out', cert])
        return key, cert

    @property
    def rogue_ca(self):
        """``(key, cert)`` of a second CA, which no server here trusts."""
        if self._rogue_ca is None:
            self._rogue_ca = self._make_ca('rogue-ca', 'untrusted CA')
        return self._rogue_ca

    def rogue(self, name):
        """``(key, cert)`` for ``name``, signed by the untrusted CA."""
        return self.issue(name, ca=self.rogue_ca)


class PrivateOvsdb(fixtures.Fixture):
    """An ovsdb-server of the test's own with a ``pssl:`` remote.

    ``port`` is its TLS port on 127.0.0.1 (the server picks it: no race
    with other tests), ``vsctl()`` runs ovs-vsctl on its unix socket and
    ``log()`` is its log, where refused handshakes are reported.
    """

    def __init__(self, pki):
        super().__init__()
        self.pki = pki

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        db = os.path.join(self.dir, 'conf.db')
        _run(['ovsdb-tool', 'create', db, SCHEMA])
        key, cert = self.pki.issue('ovsdb-server')
        self.sock = os.path.join(self.dir, 'db.sock')
        self.log_path = os.path.join(self.dir, 'ovsdb-server.log')
        with open(os.path.join(self.dir, 'stderr'), 'wb') as err:
            self.proc = subprocess.Popen(
                ['ovsdb-server', db,
                 '--remote=punix:' + self.sock,
                 '--remote=pssl:0:127.0.0.1',
                 '--private-key=' + key, '--certificate=' + cert,
                 '--ca-cert=' + self.pki.ca_cert,
                 '--pidfile=' + os.path.join(self.dir, 'pid'),
                 '--unixctl=' + os.path.join(self.dir, 'ctl'),
                 '--log-file=' + self.log_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        self.addCleanup(self._stop)
        self.port = int(wait_for(self._listening_port, 10,
                                 'ovsdb-server pssl: listener'))
        wait_for(lambda: os.path.exists(self.sock), 10,
                 'ovsdb-server unix socket')
        self.vsctl('--no-wait', 'init')
        self._stopping = threading.Event()
        acknowledger = threading.Thread(target=self._acknowledge,
                                        name='fake-vswitchd', daemon=True)
        acknowledger.start()
        self.addCleanup(acknowledger.join, 10)
        self.addCleanup(self._stopping.set)

    def _listening_port(self):
        if self.proc.poll() is not None:
            raise AssertionError('ovsdb-server exited with %s:\n%s%s' % (
                self.proc.returncode, self.log(),
                tail(os.path.join(self.dir, 'stderr'))))
        match = re.search(r'listening on port (\d+)', self.log())
        return match and match.group(1)

    def _acknowledge(self):
        """Play ovs-vswitchd: take every new next_cfg as cur_cfg."""
        while not self._stopping.wait(0.1):
            proc = subprocess.run(
                ['ovs-vsctl', '--db=unix:' + self.sock, '--timeout=5',
                 'get', 'Open_vSwitch', '.', 'next_cfg', 'cur_cfg'],
                capture_output=True, text=True)
            values = proc.stdout.split()
            if proc.returncode == 0 and len(values) == 2 and \
                    values[0] != values[1]:
                subprocess.run(
                    ['ovs-vsctl', '--db=unix:' + self.sock, '--timeout=5',
                     '--no-wait', 'set', 'Open_vSwitch', '.',
                     'cur_cfg=' + values[0]], capture_output=True)

    def vsctl(self, *args, check=True):
        """ovs-vsctl on this server's unix socket; its stdout."""
        cmd = ['ovs-vsctl', '--db=unix:' + self.sock, '--timeout=10']
        if check:
            return _run(cmd + list(args))
        return subprocess.run(cmd + list(args), capture_output=True,
                              text=True)

    def log(self):
        return tail(self.log_path, limit=20000)

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PrivateRabbit(fixtures.Fixture):
    """A RabbitMQ node of the test's own, over TLS or plain TCP.

    ``port`` is its listener on 127.0.0.1. With a ``pki`` the listener is
    TLS only, and the node requires and verifies a client certificate
    (``verify_peer`` with ``fail_if_no_peer_cert``) signed by the Pki's CA;
    without, it is plain AMQP and ``url`` reaches it as guest. The node
    has its own node name, Erlang cookie (its ``HOME`` is a temporary
    directory), distribution port on 127.0.0.1, data, logs and no plugins;
    it runs in the foreground in a session of its own, so the cleanup can
    always end it. ``stop()`` and ``start()`` take it away and bring it
    back on the same ports and data, as an operator's restart would.
    Starting takes a few seconds; after ``RABBITMQ_START_TIMEOUT`` the
    fixture fails with the node's log.
    """

    def __init__(self, pki=None):
        super().__init__()
        self.pki = pki

    def _setUp(self):
        server = os.path.join(RABBITMQ_BIN, 'rabbitmq-server')
        if not os.access(server, os.X_OK):
            server = shutil.which('rabbitmq-server')
        if server is None:
            raise AssertionError('rabbitmq-server is not installed')
        self.server = server
        self.ctl_path = os.path.join(os.path.dirname(server), 'rabbitmqctl')
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.port = free_port()
        self.url = 'rabbit://guest:guest@127.0.0.1:%d/' % self.port
        self.node = 'vifagent-%s-%s@localhost' % (
            'tls' if self.pki else 'tcp', uuid.uuid4().hex[:8])
        config = os.path.join(self.dir, 'rabbitmq.conf')
        with open(config, 'w') as f:
            if self.pki is None:
                f.write('listeners.tcp.default = 127.0.0.1:%d\n'
                        % self.port)
            else:
                key, cert = self.pki.issue('rabbitmq')
                f.write('listeners.tcp = none\n'
                        'listeners.ssl.default = 127.0.0.1:%d\n'
                        'ssl_options.cacertfile = %s\n'
                        'ssl_options.certfile = %s\n'
                        'ssl_options.keyfile = %s\n'
                        'ssl_options.verify = verify_peer\n'
                        'ssl_options.fail_if_no_peer_cert = true\n'
                        % (self.port, self.pki.ca_cert, cert, key))
        plugins = os.path.join(self.dir, 'enabled_plugins')
        with open(plugins, 'w') as f:
            f.write('[].\n')
        env_conf = os.path.join(self.dir, 'rabbitmq-env.conf')
        open(env_conf, 'w').close()
        cookie = os.path.join(self.dir, '.erlang.cookie')
        with open(os.open(cookie, os.O_WRONLY | os.O_CREAT, 0o400),
                  'w') as f:
            f.write(secrets.token_hex(16).upper())
        self.env = dict(
            os.environ,
            HOME=self.dir,
            RABBITMQ_NODENAME=self.node,
            # The listener is in the config file; this one is spare, so
            # never the shared 5672.
            RABBITMQ_NODE_PORT=str(
                self.port if self.pki is None else free_port()),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                '-kernel inet_dist_use_interface {127,0,0,1}'),
            RABBITMQ_CONFIG_FILE=config,
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir,
                                                       'advanced.config'),
            RABBITMQ_CONF_ENV_FILE=env_conf,
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, 'mnesia'),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, 'log'),
            RABBITMQ_PID_FILE=os.path.join(self.dir, 'rabbitmq.pid'))
        self.out_path = os.path.join(self.dir, 'rabbitmq-server.out')
        self.proc = None
        self.addCleanup(self._stop)
        self.start()

    def start(self):
        """Start the node (again); return once it accepts clients."""
        with open(self.out_path, 'ab') as out:
            self.proc = subprocess.Popen(
                [self.server], env=self.env, cwd=self.dir,
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._started, RABBITMQ_START_TIMEOUT,
                 'private RabbitMQ node %s' % self.node, interval=0.5)

    def stop(self):
        """Stop the node as an operator would; its data stays."""
        self._stop()

    def ctl(self, *args, timeout=30):
        """rabbitmqctl against this node; the completed process."""
        return subprocess.run([self.ctl_path, '-n', self.node] + list(args),
                              env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def _started(self):
        if self.proc.poll() is not None:
            raise AssertionError('RabbitMQ node exited with %s:\n%s' % (
                self.proc.returncode, self.log()))
        try:
            return self.ctl('-q', 'await_startup', '--timeout', '5',
                            timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def log(self):
        return tail(self.out_path) + tail(os.path.join(
            self.dir, 'log', self.node + '.log'))

    def _stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl('stop', timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            # The session is the node's own: its script, the Erlang VM
            # and the VM's helpers, nothing else.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
