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

"""vifagent-agent: the compute-node daemon."""

import logging as std_logging
import os
import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from vifagent import conf as vifagent_conf  # noqa: F401 (registers opts)
from vifagent import exception
from vifagent import service

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

#: Seconds SIGTERM waits for an orderly stop before the process exits.
STOP_TIMEOUT = 7


def _lead_own_process_group():
    """Lead a process group of our own, as a daemon should.

    oslo.messaging's queue manager names queues after the process group's
    leader and reads its /proc entry each time: an agent started by a
    script that has exited would be left in a leaderless group and never
    serve RPC. Its own group also marks each start as a new generation,
    so its queues keep their names across restarts.
    """
    if os.getpgrp() != os.getpid():
        try:
            os.setpgid(0, 0)
        except OSError:
            pass  # a session leader already leads its process group


def main(argv=None):
    _lead_own_process_group()
    logging.register_options(CONF)
    CONF(sys.argv[1:] if argv is None else argv, project='vifagent')
    logging.setup(CONF, 'vifagent')
    stop = threading.Event()

    def on_signal(signum, frame):
        LOG.info('Signal %d: stopping', signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = service.Agent(CONF)
    try:
        agent.start()
    except exception.StoreUnavailable as e:
        # The store is opened before anything touches the host: refusing
        # here leaves every chain as it is.
        LOG.critical('Not starting: %s', e)
        print('vifagent-agent: not starting: %s' % e, file=sys.stderr)
        return 2
    while not stop.wait(1):
        pass
    # Chains stay whatever happens here; a stop that hangs (a broker that
    # does not answer a goodbye, say) must not keep the process alive.
    stopper = threading.Thread(target=agent.stop, name='stop', daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT)
    if stopper.is_alive():
        LOG.warning('Stopping took over %d s; exiting anyway', STOP_TIMEOUT)
        # Threads still waiting for the broker would hold the
        # interpreter's exit: leave now, the chains are in place.
        std_logging.shutdown()
        os._exit(0)
    return 0


if __name__ == '__main__':
    sys.exit(main())
