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

"""Privilege separation: every kernel mutation runs in a privsep daemon.

``net_admin`` holds CAP_NET_ADMIN only and serves every operation on the
host's chains. ``netns_admin`` adds CAP_SYS_ADMIN, which entering another
network namespace requires; it starts only when a ``netns`` port (a
container, or a stand-in VM in tests and demos) is plugged, so a host with
libvirt guests never runs a daemon holding more than CAP_NET_ADMIN.

Entrypoints are called through ``call``: a daemon that died (killed, say)
or stopped answering within the call's deadline turns into a typed
``PrivilegedError`` for that batch, never a hang, and the next call runs
on a new daemon.
"""

import os
import shlex
import signal
import socket
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging
from oslo_privsep import capabilities as caps
from oslo_privsep import comm
from oslo_privsep import daemon
from oslo_privsep import priv_context

from vifagent import exception
from vifagent.kernel import heap

LOG = logging.getLogger(__name__)

net_admin = priv_context.PrivContext(
    'vifagent',
    cfg_section='vifagent_privileged',
    pypath=__name__ + '.net_admin',
    capabilities=[caps.CAP_NET_ADMIN],
    logger_name=__name__,
)

netns_admin = priv_context.PrivContext(
    'vifagent',
    cfg_section='vifagent_netns_privileged',
    pypath=__name__ + '.netns_admin',
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN],
    logger_name=__name__,
)

CONTEXTS = (net_admin, netns_admin)


def configure(conf=cfg.CONF):
    """Start privsep daemons with the local privsep-helper, not sudo.

    oslo.privsep's default helper command is ``sudo privsep-helper``; the
    agent already runs as root and hosts may have no sudo at all. Unless
    the operator set ``helper_command``, use the privsep-helper installed
    beside this interpreter. Call after the configuration is parsed.
    """
    helper = os.path.join(os.path.dirname(sys.executable), 'privsep-helper')
    args = [helper]
    try:
        config_files = conf.config_file or ()
    except cfg.NoSuchOptError:
        config_files = ()  # the configuration was never parsed
    for config_file in config_files:
        args += ['--config-file', config_file]
    for context in CONTEXTS:
        section = conf[context.cfg_section]
        if not section.helper_command:
            conf.set_default('helper_command', shlex.join(args),
                             group=context.cfg_section)


def run_in_process():
    """Run entrypoints in the calling process (tests that are root)."""
    for context in CONTEXTS:
        context.set_client_mode(False)


# The daemon's pid per context, learnt from the daemon itself when its
# channel is new: oslo.privsep's helper forks the daemon off, so the agent
# knows no pid of its own to kill when a daemon hangs.
_daemons = {}
_daemons_lock = threading.Lock()

# A new daemon answers this quickly or is taken for hung.
_PID_TIMEOUT = 10.0


@net_admin.entrypoint
def _net_admin_pid():
    return os.getpid()


@netns_admin.entrypoint
def _netns_admin_pid():
    return os.getpid()


_PID_OF = {net_admin: _net_admin_pid, netns_admin: _netns_admin_pid}


@net_admin.entrypoint
def _net_admin_trim():
    return heap.trim()


@netns_admin.entrypoint
def _netns_admin_trim():
    return heap.trim()


_TRIM_OF = {net_admin: _net_admin_trim, netns_admin: _netns_admin_trim}


def trim_heaps():
    """Hand freed heap pages back here and in each running daemon.

    The daemons' threads leave free memory in glibc's arenas as the
    agent's do (see vifagent.kernel.heap). A daemon that is not running
    is not started for this. Returns the pypaths of the daemons reached.
    """
    heap.trim()
    reached = []
    for context, entrypoint in _TRIM_OF.items():
        channel = context.channel
        if not (context.client_mode and channel is not None and
                channel.running):
            continue
        try:
            call(context, entrypoint, timeout=_PID_TIMEOUT)
        except Exception as e:
            # Housekeeping: never fails the pass that asked for it.
            LOG.warning('Could not trim the heap of %s: %s',
                        context.pypath, e)
        else:
            reached.append(context.pypath)
    return reached


def call(context, entrypoint, *args, timeout=None):
    """Run ``entrypoint`` in ``context``'s daemon, within ``timeout`` s.

    A daemon that dies under the call, or gives no answer in time, makes
    the call raise PrivilegedError; a hung daemon is killed first, so the
    next call starts a new one instead of waiting on it too.
    """
    if not context.client_mode:
        return entrypoint(*args)
    try:
        _learn_pid(context)
        return entrypoint(*args, _wrap_timeout=timeout)
    except comm.PrivsepTimeout:
        reason = 'the privileged daemon gave no answer within %.0f s' % (
            timeout or _PID_TIMEOUT)
        _replace(context, reason)
        raise exception.PrivilegedError(reason=reason + '; replaced it')
    except daemon.FailedToDropPrivileges as e:
        raise exception.PrivilegedError(
            reason='cannot start the privileged daemon: %s' % e)
    except OSError as e:
        channel = context.channel
        if channel is not None and channel.running:
            raise  # the operation's own error, raised in the daemon
        LOG.error('Privileged daemon of %s lost: %s', context.pypath, e)
        raise exception.PrivilegedError(
            reason='the privileged daemon died: %s' % e)


def _learn_pid(context):
    """Ask a daemon new to us for its pid (this starts it if needed)."""
    channel = context.channel
    with _daemons_lock:
        known = _daemons.get(context)
    if channel is not None and channel.running and known and \
            known[0] is channel:
        return
    pid = _PID_OF[context](_wrap_timeout=_PID_TIMEOUT)
    LOG.info('Privileged daemon of %s is pid %d', context.pypath, pid)
    with _daemons_lock:
        _daemons[context] = (context.channel, pid)


def _replace(context, reason):
    """Kill a hung daemon and drop its channel; the next call starts one."""
    channel = context.channel
    with _daemons_lock:
        known, pid = _daemons.pop(context, (None, None))
    if channel is None:
        return
    if known is channel:
        LOG.error('Privileged daemon %d of %s hung (%s): killing it', pid,
                  context.pypath, reason)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        LOG.error('Privileged daemon of %s hung before it gave its pid '
                  '(%s): leaving it', context.pypath, reason)
    # Ending our read side wakes the channel's reader at once, so closing
    # the channel never waits on a daemon that cannot answer.
    try:
        channel.writer.writesock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    context.stop()
