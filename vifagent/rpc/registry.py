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

"""Controller side: which agents are alive, fed by the report topic.

A controller keeps one ``AgentRegistry`` and one report listener feeding
it::

    registry = AgentRegistry(agent_down_time(cfg.CONF))
    listener = registry.listener(transport, cfg.CONF.agent.report_topic,
                                 'controller-1')
    listener.start()
    for agent in registry.agents():
        if agent['needs_sync']:
            AgentClient(transport, agent['host']).sync_ports(view)
            registry.synced(agent['host'])

Every report (heartbeat, status cast, resync request) proves its agent
alive; an agent none was heard from for ``down_time`` seconds is dead.
An agent that asked for the controller's full view, or that came back
(a new ``started_at``) holding no ports after it held some, is flagged
``needs_sync`` until the controller says it ``synced`` it.
"""

import threading
import time

from vifagent.rpc import client as client_mod

__all__ = [
    'AgentRegistry',
    'agent_down_time',
]


def agent_down_time(conf):
    """``[agent] agent_down_time``, or 3 heartbeats when it is unset."""
    return conf.agent.agent_down_time or 3 * conf.agent.report_interval


class AgentRegistry:
    """Agents by host: last heard from, counts, version, alive or dead.

    Thread-safe: the listener's thread feeds it while others read it.
    ``clock`` (monotonic) decides liveness; ``wall`` only stamps times
    for people.
    """

    def __init__(self, down_time, clock=time.monotonic, wall=time.time):
        self.down_time = down_time
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._agents = {}

    def _entry(self, host):
        entry = self._agents.get(host)
        if entry is None:
            entry = self._agents[host] = {
                'host': host, 'first_seen': self._wall(), 'heartbeats': 0,
                'last_heartbeat': None, 'ports': None,
                'ports_by_status': {}, 'version': None, 'api_version': None,
                'started_at': None, 'restarts': 0, 'needs_sync': False,
                'sync_reason': None, 'heartbeat_gap': None,
                'max_heartbeat_gap': None, '_heard': None, '_beat': None}
        entry['_heard'] = self._clock()
        return entry

    def on_state(self, state):
        """A heartbeat (report_state)."""
        host = state.get('host') if isinstance(state, dict) else None
        if not isinstance(host, str) or not host:
            return
        with self._lock:
            entry = self._entry(host)
            now = entry['_heard']
            if entry['_beat'] is not None:
                gap = round(now - entry['_beat'], 3)
                entry['heartbeat_gap'] = gap
                entry['max_heartbeat_gap'] = max(
                    gap, entry['max_heartbeat_gap'] or 0)
            entry['_beat'] = now
            entry['heartbeats'] += 1
            entry['last_heartbeat'] = self._wall()
            ports = state.get('ports')
            started = state.get('started_at')
            if entry['started_at'] is not None and \
                    started != entry['started_at']:
                entry['restarts'] += 1
                if not ports and entry['ports']:
                    self._flag(entry, 'restarted with no ports after '
                                      'holding %d' % entry['ports'])
            entry['started_at'] = started
            entry['ports'] = ports
            entry['ports_by_status'] = dict(state.get('ports_by_status')
                                            or {})
            entry['version'] = state.get('version')
            entry['api_version'] = state.get('api_version')

    def on_status(self, statuses):
        """A port_status cast: its agents are alive."""
        hosts = {s.get('host') for s in statuses or ()
                 if isinstance(s, dict)}
        with self._lock:
            for host in hosts:
                if isinstance(host, str) and host:
                    self._entry(host)

    def on_resync(self, host, reason):
        """The agent asked for the controller's full view."""
        if not isinstance(host, str) or not host:
            return
        with self._lock:
            self._flag(self._entry(host), reason)

    @staticmethod
    def _flag(entry, reason):
        entry['needs_sync'] = True
        entry['sync_reason'] = str(reason)

    def synced(self, host):
        """The controller sent ``host`` its full view (sync_ports)."""
        with self._lock:
            entry = self._agents.get(host)
            if entry is not None:
                entry['needs_sync'] = False
                entry['sync_reason'] = None

    def forget(self, host):
        """Drop a host (decommissioned); it comes back if it reports."""
        with self._lock:
            self._agents.pop(host, None)

    def _public(self, entry, now):
        age = now - entry['_heard']
        view = {k: v for k, v in entry.items() if not k.startswith('_')}
        view['ports_by_status'] = dict(entry['ports_by_status'])
        view['silent_for'] = round(age, 1)
        view['alive'] = age <= self.down_time
        return view

    def get(self, host):
        """One agent's entry, or None if it was never heard from."""
        with self._lock:
            entry = self._agents.get(host)
            return entry and self._public(entry, self._clock())

    def agents(self):
        """Every agent heard from, by host."""
        with self._lock:
            now = self._clock()
            return [self._public(self._agents[h], now)
                    for h in sorted(self._agents)]

    def alive(self, host):
        entry = self.get(host)
        return bool(entry and entry['alive'])

    def listener(self, transport, topic, name):
        """A report listener feeding this registry (not started)."""
        return client_mod.get_report_listener(
            transport, topic, name, self.on_status, self.on_state,
            self.on_resync)
