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

"""Wiring: builds the agent's parts, starts and stops their threads.

Nothing here decides anything about ports: the reconciler owns them, the
RPC endpoint validates and delegates to it, the reporter sends what it
records, and the event sources (netlink, OVSDB, libvirt) only tell it
which ports to look at. The broker is never waited for: RPC serving
starts on its own thread once RabbitMQ answers, and until then the agent
repairs, and serves health and metrics, all the same.
"""

import functools
import threading

from oslo_log import log as logging

from vifagent.conf import agent as agent_conf
from vifagent.dataplane import libvirt as libvirt_dp
from vifagent.kernel import rtnl
from vifagent import metrics
from vifagent import privileged
from vifagent.reconcile import apply
from vifagent.reconcile import reconciler as reconciler_mod
from vifagent import rpc
from vifagent.rpc import reporter as reporter_mod
from vifagent.rpc import server as server_mod
from vifagent import store as store_mod

LOG = logging.getLogger(__name__)

# Wait between attempts to start serving RPC while the broker is away.
_SERVE_RETRY = 2.0
# Longest wait for the RPC server to stop (see Agent._stop_server).
_SERVER_STOP = 3


class Agent:
    """One compute node's agent; start() opens every connection."""

    def __init__(self, conf):
        self.conf = conf
        self.store = None
        self.engine = None
        self.libvirt = None
        self.reconciler = None
        self.endpoint = None
        self.reporter = None
        self.health = metrics.Health()
        self.metrics = None
        self._transport = None
        self._server = None
        self._monitor = None
        self._stopping = threading.Event()

    def start(self):
        conf = self.conf
        privileged.configure(conf)
        self.store = store_mod.Store(conf.agent.state_path,
                                     conf.agent.default_mtu)
        # The integration bridge is the full pass's job: a slow or absent
        # OVSDB then fails a pass, which is retried, not the whole start;
        # an OVSDB away at start is connected to once it answers.
        self.engine = apply.Engine.from_conf(conf, ensure_bridge=False,
                                             wait=False)
        self.reconciler = reconciler_mod.Reconciler(
            self.store, self.engine, conf.host,
            resync_interval=conf.agent.resync_interval,
            orphan_grace=conf.agent.orphan_grace,
            max_retries=conf.agent.max_retries,
            retry_cap=conf.agent.retry_backoff_cap,
            max_orphan_removals=conf.agent.max_orphan_removals,
            netns_allowed=agent_conf.netns_allowed(conf))
        if conf.libvirt.enabled:
            # Connected before the first pass, so it already sees the taps.
            self.libvirt = libvirt_dp.Watcher(
                conf.libvirt.connection_uri, self.reconciler.on_domains,
                functools.partial(self.reconciler.mark_all,
                                  'connected to libvirt'),
                backoff_cap=conf.libvirt.reconnect_backoff_cap,
                keepalive_interval=conf.libvirt.keepalive_interval,
                reload_interval=conf.agent.resync_interval)
            self.reconciler.taps = self.libvirt
            self.libvirt.start()
        rpc.set_agent_defaults(conf)
        self._transport = rpc.get_transport(conf)
        self.endpoint = server_mod.AgentEndpoint(self.reconciler, conf,
                                                 self._extra_state)
        self.reporter = reporter_mod.Reporter(
            self._transport, conf, self.reconciler.status,
            self.endpoint.agent_state)
        self._wire_health()
        if conf.metrics.enabled:
            self.metrics = metrics.MetricsServer(
                self.endpoint.agent_state, self.health,
                conf.metrics.bind_host, conf.metrics.bind_port)
            self.metrics.start()
        # Events only mark ports; marks made during the first pass are
        # taken by the worker right after it.
        self._monitor = rtnl.LinkMonitor(
            self.reconciler.on_link_names,
            functools.partial(self.reconciler.mark_all,
                              'netlink events were lost'),
            rcvbuf=conf.agent.netlink_rcvbuf)
        self._monitor.start()
        self.engine.ovs.add_listener(self.reconciler.on_ovsdb_row)
        # A full pass re-adopts every stored chain, writing nothing when
        # the host is healthy; then the worker takes over.
        self.reconciler.start()
        self.reporter.start()
        threading.Thread(target=self._serve, name='rpc-start',
                         daemon=True).start()
        LOG.info('vifagent started as %s with %d ports', conf.host,
                 len(self.store.port_ids()))

    def _wire_health(self):
        self.health.add_dependency('rpc', self._rpc_up)
        self.health.add_dependency('ovsdb', self.engine.ovs.connected)
        # Link events repair drift at once; without them only full passes.
        self.health.add_dependency('netlink', self._netlink_up)
        if self.libvirt is not None:
            self.health.add_dependency('libvirt', self.libvirt.connected)
        self.health.add_check(self.reconciler.unhealthy)

    def _netlink_up(self):
        return self._monitor is not None and self._monitor.healthy()

    def _rpc_up(self):
        return self._server is not None and self.reporter.up is not False

    def _extra_state(self):
        return {
            'metrics': ('http://%s:%d/' % self.metrics.address
                        if self.metrics else None),
            'libvirt': self.libvirt.to_dict() if self.libvirt else None,
            'reports': self.reporter.to_dict(),
            'netlink': self._netlink_state(),
        }

    def _netlink_state(self):
        monitor = self._monitor
        if monitor is None:    # a scrape before start() made it
            return None
        return {'healthy': monitor.healthy(), 'overflows': monitor.overflows,
                'restarts': monitor.restarts}

    def _serve(self):
        """Start the RPC server once the broker answers."""
        while not self._stopping.is_set():
            server = server_mod.get_server(self._transport, self.endpoint,
                                           self.conf)
            try:
                server.start()
            except Exception as e:
                LOG.warning('Cannot serve RPC yet: %s', e)
                self._stopping.wait(_SERVE_RETRY)
                continue
            self._server = server
            LOG.info('vifagent serving topic %s as %s',
                     self.conf.agent.rpc_topic, self.conf.host)
            return

    def stop(self):
        """Stop serving; every chain stays as it is."""
        self._stopping.set()
        if self.metrics is not None:
            self.metrics.stop()
        if self._server is not None:
            self._stop_server()
        if self._monitor is not None:
            self._monitor.stop()
        if self.reconciler is not None:
            self.engine.ovs.remove_listener(self.reconciler.on_ovsdb_row)
            self.reconciler.stop()
        if self.reporter is not None:
            self.reporter.stop(timeout=2)
        if self.libvirt is not None:
            self.libvirt.stop()
        if self.engine is not None:
            self.engine.stop()
        if self.store is not None:
            self.store.close()
        LOG.info('vifagent stopped; chains left in place')
        if self._transport is not None:
            # Last: with the broker away this may wait for it.
            self._transport.cleanup()

    def _stop_server(self):
        """Stop serving RPC; give up waiting after _SERVER_STOP seconds.

        With the broker away, oslo.messaging's listener may keep trying
        to reconnect and never finish stopping; the agent's own parts
        (store, reconciler, privsep) must still be stopped cleanly. With
        no broker there is no call in flight to wait for.
        """
        def stop():
            self._server.stop()
            self._server.wait()
        stopper = threading.Thread(target=stop, name='rpc-stop',
                                   daemon=True)
        stopper.start()
        stopper.join(_SERVER_STOP)
        if stopper.is_alive():
            LOG.warning('RPC server did not stop within %d s (is the '
                        'broker away?); stopping the rest', _SERVER_STOP)
