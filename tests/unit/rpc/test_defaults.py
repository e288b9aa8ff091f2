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

"""The agent's broker-friendly oslo.messaging defaults (rpc.__init__)."""

import fixtures
from oslo_config import cfg
from oslotest import base

from vifagent import conf as vifagent_conf
from vifagent import rpc

ONE = 'rabbit://guest:guest@127.0.0.1:5672/'
THREE = ('rabbit://guest:guest@127.0.0.1:5681,guest:guest@127.0.0.1:5682,'
         'guest:guest@127.0.0.1:5683/')


class TestAgentDefaults(base.BaseTestCase):

    def conf(self, url, lines=''):
        conf = cfg.ConfigOpts()
        vifagent_conf.register_opts(conf)
        path = self.useFixture(fixtures.TempDir()).path + '/vifagent.conf'
        with open(path, 'w') as f:
            f.write('[DEFAULT]\nhost = compute-7\ntransport_url = %s\n'
                    '[agent]\nstate_path = /var/lib/x\n%s' % (url, lines))
        conf(['--config-file', path], project='vifagent',
             default_config_files=[], default_config_dirs=[])
        rpc.set_agent_defaults(conf)
        return conf

    def test_one_broker_classic_queues(self):
        rabbit = self.conf(ONE).oslo_messaging_rabbit
        self.assertFalse(rabbit.rabbit_quorum_queue)
        self.assertFalse(rabbit.rabbit_transient_quorum_queue)

    def test_cluster_quorum_queues(self):
        self.assertEqual(3, rpc.broker_count(self.conf(THREE)))
        rabbit = self.conf(THREE).oslo_messaging_rabbit
        self.assertTrue(rabbit.rabbit_quorum_queue)
        # The fanout queues too: a report cast while a listener fails
        # over waits in its queue instead of vanishing with its node.
        self.assertTrue(rabbit.rabbit_transient_quorum_queue)

    def test_stable_queue_names_per_agent_host(self):
        conf = self.conf(ONE)
        rabbit = conf.oslo_messaging_rabbit
        self.assertTrue(rabbit.use_queue_manager)
        self.assertEqual('compute-7', rabbit.hostname)
        self.assertEqual('vifagent-agent', rabbit.processname)

    def test_expiry_and_jitter(self):
        rabbit = self.conf(ONE).oslo_messaging_rabbit
        self.assertEqual(rpc.TRANSIENT_QUEUE_TTL,
                         rabbit.rabbit_transient_queues_ttl)
        self.assertEqual(rpc.RECONNECT_SPLAY, rabbit.kombu_reconnect_splay)

    def test_config_file_wins(self):
        conf = self.conf(THREE, '[oslo_messaging_rabbit]\n'
                                'rabbit_quorum_queue = false\n'
                                'rabbit_transient_quorum_queue = false\n'
                                'use_queue_manager = false\n'
                                'kombu_reconnect_splay = 0\n')
        rabbit = conf.oslo_messaging_rabbit
        self.assertFalse(rabbit.rabbit_quorum_queue)
        self.assertFalse(rabbit.rabbit_transient_quorum_queue)
        self.assertFalse(rabbit.use_queue_manager)
        self.assertEqual(0, rabbit.kombu_reconnect_splay)


class TestSharedDefaults(base.BaseTestCase):
    """Controllers and agents agree on queue types for the same URL."""

    def test_client_side_follows_the_url(self):
        for url, quorum in ((ONE, False), (THREE, True)):
            conf = cfg.ConfigOpts()
            rpc.set_defaults(conf, url)
            rabbit = conf.oslo_messaging_rabbit
            self.assertEqual(quorum, rabbit.rabbit_quorum_queue)
            self.assertEqual(quorum, rabbit.rabbit_transient_quorum_queue)
            # On a cluster, the next node after a failure is drawn at
            # random: in round robin a listener could come back to the
            # dead node of three after each of its three switches.
            self.assertEqual('shuffle' if quorum else 'round-robin',
                             rabbit.kombu_failover_strategy)
            self.assertFalse(rabbit.use_queue_manager)

    def test_get_transport_applies_them(self):
        conf = cfg.ConfigOpts()
        transport = rpc.get_transport(conf, url=THREE)
        self.addCleanup(transport.cleanup)
        self.assertTrue(conf.oslo_messaging_rabbit.rabbit_quorum_queue)
        self.assertTrue(
            conf.oslo_messaging_rabbit.rabbit_transient_quorum_queue)
