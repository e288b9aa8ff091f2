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

"""Status memory: each port's latest status and what the controller heard.

It also holds a pending request for the controller's full view (a
resync_request), sent by the reporter like the statuses.

The reconciler records results here and never waits for the broker; the
reporter takes what differs from the last report, sends it, and only
then marks it reported. While the broker is away, a port that changes
twice is sent once, with its latest status. What was reported is kept in
the store, so a restart of a healthy host reports nothing.
"""

import threading

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class StatusBook:
    """Latest (status, reason) per port against the last reported one."""

    def __init__(self, store):
        self._store = store
        self._reported = store.reported()
        self._latest = {}
        self._cond = threading.Condition()
        self._woken = False
        self._resync = None

    def record(self, statuses):
        """Note {port_id: (status, reason)}; wake the reporter if new."""
        with self._cond:
            self._latest.update(statuses)
            if any(self._reported.get(pid) != value
                   for pid, value in statuses.items()):
                self._cond.notify_all()

    def forget(self, port_ids):
        """These ports are gone: nothing more to report for them."""
        with self._cond:
            for pid in port_ids:
                self._latest.pop(pid, None)
                self._reported.pop(pid, None)

    def latest(self, port_id):
        return self._latest.get(port_id)

    def pending(self):
        """{port_id: (status, reason)} the controller has not heard."""
        with self._cond:
            return self._pending()

    def _pending(self):
        return {pid: value for pid, value in self._latest.items()
                if self._reported.get(pid) != value}

    def request_resync(self, reason):
        """Ask the controller for its full view (a sync_ports)."""
        with self._cond:
            self._resync = reason
            self._cond.notify_all()

    def take_resync(self):
        """The pending resync request's reason (None: none), taken."""
        with self._cond:
            reason, self._resync = self._resync, None
            return reason

    def sent(self, statuses):
        """The controller has these: remember them, durably if possible."""
        with self._cond:
            done = {pid: value for pid, value in statuses.items()
                    if self._latest.get(pid) is not None}
            self._reported.update(done)
            try:
                self._store.set_reported(done)
            except Exception as e:
                # Only costs a repeated report after a restart.
                LOG.warning('Could not record %d reported statuses: %s',
                            len(done), e)

    def wait(self, timeout):
        """Until something is pending, wake() is called, or timeout."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._woken or self._resync or self._pending(),
                timeout)
            self._woken = False

    def wake(self):
        with self._cond:
            self._woken = True
            self._cond.notify_all()
