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

"""The OVSDB connection's transport: unix: by default, ssl: with its files.

No server here: the functional tests (tests/functional/cmd/
test_transport_tls.py) connect to a real ovsdb-server over TLS. These
check what must hold before any connection is tried: the defaults, the
refusal of an ``ssl:`` connection without its three files, and that the
files reach python-ovs, which holds them for the whole process.
"""

import os
from unittest import mock

import fixtures
from oslo_config import cfg
from oslotest import base
from ovs import stream as ovs_stream

from vifagent.conf import opts
from vifagent.conf import ovs as ovs_conf
from vifagent.dataplane import ovs
from vifagent import exception

REMOTE = 'ssl:192.0.2.10:6640'
NAMES = ('ssl_key_file', 'ssl_cert_file', 'ssl_ca_cert_file')


class TestOptions(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.conf = cfg.ConfigOpts()
        ovs_conf.register_opts(self.conf)
        self.conf([], default_config_files=[], default_config_dirs=[])

    def test_default_is_the_local_unix_socket(self):
        self.assertEqual('unix:/var/run/openvswitch/db.sock',
                         self.conf.ovs.ovsdb_connection)

    def test_tls_files_are_unset_by_default_and_listed(self):
        for name in NAMES:
            self.assertIsNone(self.conf.ovs[name])
        listed = {(str(group), opt.dest) for group, group_opts in
                  opts.list_opts() for opt in group_opts}
        for name in NAMES:
            self.assertIn(('ovs', name), listed)


class TestCheckSslFiles(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        d = self.useFixture(fixtures.TempDir()).path
        self.files = []
        for name in ('key.pem', 'cert.pem', 'ca.pem'):
            path = os.path.join(d, name)
            with open(path, 'w') as f:
                f.write('-----BEGIN NOTHING-----\n')
            self.files.append(path)

    def test_other_transports_need_no_files(self):
        for remote in ('unix:/var/run/openvswitch/db.sock',
                       'tcp:127.0.0.1:6640'):
            self.assertIsNone(ovs.check_ssl_files(remote, None, None, None))

    def test_all_three_files_are_returned(self):
        self.assertEqual(tuple(self.files),
                         ovs.check_ssl_files(REMOTE, *self.files))

    def test_each_missing_file_is_named(self):
        for i, name in enumerate(NAMES):
            files = list(self.files)
            files[i] = None
            e = self.assertRaises(exception.OvsdbError, ovs.check_ssl_files,
                                  REMOTE, *files)
            self.assertIn('%s needs [ovs] ssl_key_file, ssl_cert_file and '
                          'ssl_ca_cert_file; not set: %s' % (REMOTE, name),
                          str(e))

    def test_no_file_at_all(self):
        e = self.assertRaises(exception.OvsdbError, ovs.check_ssl_files,
                              REMOTE, None, '', None)
        self.assertIn('not set: ssl_key_file, ssl_cert_file, '
                      'ssl_ca_cert_file', str(e))

    def test_unreadable_file_is_named_with_its_path(self):
        files = list(self.files)
        files[2] = self.files[2] + '.absent'
        e = self.assertRaises(exception.OvsdbError, ovs.check_ssl_files,
                              REMOTE, *files)
        self.assertIn('cannot read ssl_ca_cert_file (%s)' % files[2], str(e))

    def test_any_ssl_remote_of_a_list_needs_them(self):
        remotes = 'unix:/run/db.sock, %s' % REMOTE
        self.assertEqual([REMOTE], ovs.ssl_remotes(remotes))
        self.assertRaises(exception.OvsdbError, ovs.check_ssl_files,
                          remotes, None, None, None)


class TestAttach(base.BaseTestCase):
    """_Api.attach with python-ovs and ovsdbapp replaced by mocks."""

    def setUp(self):
        super().setUp()
        for attr in ('_SSL_private_key_file', '_SSL_certificate_file',
                     '_SSL_ca_cert_file'):
            self.addCleanup(setattr, ovs_stream.Stream, attr,
                            getattr(ovs_stream.Stream, attr))
        self.calls = []
        self.useFixture(fixtures.MockPatchObject(
            ovs.idlutils, 'get_schema_helper',
            side_effect=self._schema_helper))
        self.useFixture(fixtures.MockPatchObject(ovs, '_Idl'))
        self.useFixture(fixtures.MockPatchObject(ovs.connection,
                                                 'Connection'))
        self.addCleanup(self._reset_api)

    @staticmethod
    def _reset_api():
        ovs._Api._ovsdb_connection = None
        ovs._Api._remote = ovs._Api._ssl = None
        ovs._Api._users = 0

    def _schema_helper(self, remote, schema):
        # What python-ovs would connect with, at the first connection.
        stream = ovs_stream.Stream
        self.calls.append((remote, stream._SSL_private_key_file,
                           stream._SSL_certificate_file,
                           stream._SSL_ca_cert_file))
        return mock.Mock()

    def test_files_are_set_before_the_first_connection(self):
        files = ('/k.pem', '/c.pem', '/ca.pem')
        ovs._Api.attach(REMOTE, 10, files)
        self.assertEqual([(REMOTE,) + files], self.calls)

    def test_other_files_for_the_same_server_are_refused(self):
        ovs._Api.attach(REMOTE, 10, ('/k.pem', '/c.pem', '/ca.pem'))
        ovs._Api.attach(REMOTE, 10, ('/k.pem', '/c.pem', '/ca.pem'))
        e = self.assertRaises(exception.OvsdbError, ovs._Api.attach,
                              REMOTE, 10, ('/k2.pem', '/c.pem', '/ca.pem'))
        self.assertIn('other TLS files', str(e))
        self.assertEqual(2, ovs._Api._users)
        ovs._Api.detach()
        ovs._Api.detach()
        self.assertIsNone(ovs._Api._ssl)

    def test_start_refuses_before_any_connection(self):
        dp = ovs.OvsDataplane(REMOTE, 'br-int', ssl_cert_file='/c.pem')
        e = self.assertRaises(exception.OvsdbError, dp.start)
        self.assertIn('not set: ssl_key_file, ssl_ca_cert_file', str(e))
        self.assertEqual([], self.calls)
        self.assertIsNone(dp.api)

    def test_tcp_is_warned_about(self):
        logger = self.useFixture(fixtures.FakeLogger(
            name='vifagent.dataplane.ovs'))
        dp = ovs.OvsDataplane('tcp:127.0.0.1:6640', 'br-int')
        dp.start(ensure_bridge=False)
        self.addCleanup(dp.stop)
        self.assertIn('neither encrypted nor authenticated', logger.output)
        self.assertEqual([('tcp:127.0.0.1:6640', None, None, None)],
                         self.calls)
