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

"""Agent to controller: status casts and the heartbeat, on their own thread.

Nothing else in the agent waits for the broker. The reconciler records
statuses in a StatusBook; this thread sends what the controller has not
heard (the latest status per port, in batches), a resync_request when
the reconciler asks for the controller's full view, and the heartbeat
every ``report_interval``. Each cast is tried a bounded number of times; a
failed send is tried again after a backoff, so the statuses that changed
while the broker was away reach the controller once it is back.

A broker that restarted has no queue the controller had: a status sent
before the controller's listener reconnected went nowhere, and fanout
gives no sign of it. So for ``report_replay_window`` seconds after an
outage, each heartbeat is preceded by the latest status of every port
that changed during the outage or since: whichever heartbeat a late
listener hears first, it has heard those statuses just before.
"""

import threading
import time

from oslo_log import log as logging
import oslo_messaging as messaging

from vifagent import rpc

LOG = logging.getLogger(__name__)

#: Most statuses in one port_status cast.
BATCH = 500
#: Tries of one cast inside oslo.messaging before this thread backs off.
_CAST_RETRY = 1
_FIRST_BACKOFF = 0.2


class Reporter:
    """Casts reports on ``[agent] report_topic`` as fanout.

    ``book`` is the StatusBook to drain; ``state`` returns the heartbeat
    payload. ``up`` is False after a cast failed and until one succeeds.
    """

    def __init__(self, transport, conf, book, state):
        self.host = conf.host
        self.interval = conf.agent.report_interval
        self.retry_cap = conf.agent.report_retry_cap
        self.replay_window = conf.agent.report_replay_window
        self._book = book
        self._state = state
        # Statuses and heartbeats as 1.0 (every listener takes them);
        # resync_request needs a 1.1 listener.
        target = messaging.Target(topic=conf.agent.report_topic,
                                  version='1.0')
        # A bounded retry: oslo.messaging's default retries forever, and
        # a fanout exchange that vanished with its last listener makes a
        # cast fail with 404 until the connection declares it again.
        self._client = messaging.get_rpc_client(transport, target).prepare(
            fanout=True, retry=_CAST_RETRY)
        self._resync_client = self._client.prepare(
            version=rpc.REPORT_VERSION)
        self.up = None
        self.sent_batches = 0
        self.failures = 0
        self.replayed = 0
        # Ports whose status changed during the last outage or its replay
        # window, and when that window ends (monotonic; None: no outage).
        self._replay = set()
        self._replay_until = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='reporter',
                                        daemon=True)

    def start(self):
        self._thread.start()

    def stop(self, timeout=5):
        """Stop sending; a cast under way is given ``timeout`` seconds."""
        self._stopping.set()
        self._book.wake()
        self._thread.join(timeout)

    def to_dict(self):
        return {'up': self.up, 'sent_batches': self.sent_batches,
                'failures': self.failures, 'replayed': self.replayed,
                'pending': len(self._book.pending())}

    def _cast(self, method, client=None, **kwargs):
        try:
            (client or self._client).cast({}, method, **kwargs)
        except Exception as e:
            self.failures += 1
            if self.up is not False:
                LOG.warning('Could not send %s, will retry: %s', method, e)
            self.up = False
            return False
        if self.up is False:
            LOG.info('Reports reach the broker again')
            if self.replay_window:
                self._replay_until = time.monotonic() + self.replay_window
        self.up = True
        return True

    def _replaying(self):
        """Whether changes now must be replayed (an outage, or after)."""
        return self.replay_window and (
            self.up is False or self._replay_until is not None and
            time.monotonic() < self._replay_until)

    def _send_replay(self):
        """Send again the statuses that changed during the last outage."""
        if self._replay_until is None:
            return True
        if time.monotonic() >= self._replay_until:
            self._replay.clear()
            self._replay_until = None
            return True
        statuses = []
        for pid in sorted(self._replay):
            latest = self._book.latest(pid)
            if latest is None:    # unbound meanwhile
                continue
            statuses.append({'port_id': pid, 'status': latest[0],
                             'reason': latest[1], 'host': self.host})
        for start in range(0, len(statuses), BATCH):
            if not self._cast('port_status',
                              statuses=statuses[start:start + BATCH]):
                return False
            self.replayed += len(statuses[start:start + BATCH])
        return True

    def _send_statuses(self):
        pending = self._book.pending()
        if pending and self._replaying():
            self._replay.update(pending)
        items = sorted(pending.items())
        for start in range(0, len(items), BATCH):
            batch = dict(items[start:start + BATCH])
            statuses = [{'port_id': pid, 'status': status, 'reason': reason,
                         'host': self.host}
                        for pid, (status, reason) in batch.items()]
            if not self._cast('port_status', statuses=statuses):
                if self.replay_window:
                    # The outage began with these.
                    self._replay.update(pending)
                return False
            self.sent_batches += 1
            self._book.sent(batch)
        return True

    def _send_resync(self):
        reason = self._book.take_resync()
        if reason is None:
            return True
        if self._cast('resync_request', self._resync_client, host=self.host,
                      reason=reason):
            LOG.info('Asked the controller for its full view: %s', reason)
            return True
        self._book.request_resync(reason)  # again, after the backoff
        return False

    def _run(self):
        next_beat = time.monotonic() + self.interval
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            ok = self._send_resync() and self._send_statuses()
            if ok and time.monotonic() >= next_beat:
                ok = self._send_replay()
            if ok and time.monotonic() >= next_beat:
                try:
                    state = self._state()
                except Exception:
                    LOG.exception('Could not gather the heartbeat')
                    state = None
                if state is not None:
                    ok = self._cast('report_state', state=state)
                if ok:
                    next_beat = time.monotonic() + self.interval
            if ok:
                backoff = _FIRST_BACKOFF
                self._book.wait(max(0.0, next_beat - time.monotonic()))
            else:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.retry_cap)
