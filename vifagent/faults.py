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

"""Named fault points, for tests that kill the agent at a chosen moment.

Code marks the moments a crash would hurt most with ``point(NAME)``. In
production this is a no-op: the points are armed only by the environment
variable ``VIFAGENT_FAULTS``, read once when the process starts, which
lists ``name[@hit][=action]`` items separated by commas:

    VIFAGENT_FAULTS=plug.links_applied@2=kill,privsep.mid_batch=hang

``hit`` (default 1) says on which pass through the point to act;
``action`` is ``kill`` (SIGKILL this process, the default) or ``hang``
(SIGSTOP it, for a daemon that stops answering). With
``VIFAGENT_FAULTS_ONCE`` naming a directory, a point acts at most once
across processes: a privsep daemon started again after a fault does not
meet the same fault.
"""

import os
import signal
import threading

ENV = 'VIFAGENT_FAULTS'
ONCE_ENV = 'VIFAGENT_FAULTS_ONCE'

#: Every point the code has, so a test can pick among them.
POINTS = (
    # the binding is committed; the plug has not started
    'bind.stored',
    # sync_ports: half the bindings written, the transaction not committed
    'store.sync_mid_transaction',
    # sync_ports committed; nothing of it plugged
    'sync.stored',
    # a plug: kernel devices written, the OVS transaction not sent
    'plug.links_applied',
    # an OVS port re-add: removed, not added again
    'ovs.readd_removed',
    # an unplug: OVS ports removed, kernel devices not deleted
    'unplug.ovs_removed',
    # in the privsep daemon: the first port of a batch done, others not
    'privsep.mid_batch',
)

ACTIONS = {
    'kill': signal.SIGKILL,
    'hang': signal.SIGSTOP,
}


def parse(spec):
    """``{name: (hit, action)}`` from a ``VIFAGENT_FAULTS`` value."""
    armed = {}
    for item in filter(None, (s.strip() for s in spec.split(','))):
        name, _, action = item.partition('=')
        name, _, hit = name.partition('@')
        action = action or 'kill'
        if name not in POINTS:
            raise ValueError('unknown fault point %r' % name)
        if action not in ACTIONS:
            raise ValueError('unknown fault action %r' % action)
        hit = int(hit or 1)
        if hit < 1:
            raise ValueError('fault hit must be >= 1: %r' % item)
        armed[name] = (hit, action)
    return armed


_armed = parse(os.environ.get(ENV, ''))
_once = os.environ.get(ONCE_ENV)
_counts = {}
_lock = threading.Lock()


def point(name):
    """Act here if the environment armed ``name`` for this pass."""
    if not _armed:
        return
    if name not in POINTS:
        raise ValueError('unknown fault point %r' % name)
    if name not in _armed:
        return
    with _lock:
        _counts[name] = count = _counts.get(name, 0) + 1
    hit, action = _armed[name]
    if count != hit or not _first_time(name):
        return
    os.kill(os.getpid(), ACTIONS[action])


def _first_time(name):
    """True unless ``name`` already acted in some process (with ONCE)."""
    if not _once:
        return True
    try:
        fd = os.open(os.path.join(_once, name),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True
