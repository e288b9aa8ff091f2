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

"""Fuzz run: hostile payloads to every RPC method of a real agent, counted.

The functional test sends 500 payloads; this sends as many as asked,
outside the test runner, with the same generator and checks
(tests/functional/fuzz.py) against a ``vifagent-agent`` of its own (own
host, topics, integration bridge and state directory; libvirt off)::

    python -m benchmarks.fuzz --payloads 10000 [--seed N]

It prints payloads, typed errors, accepted ones, host changes (a refused
payload that changed what it could reach), failures (no reply, the agent
gone, an untyped error, an invalid payload accepted, a chain left after
undoing an accepted one) and payloads per second, then every host change
and failure with its payload (``--failures FILE`` writes those payloads
whole, as JSON). Exit status 0 when there were none, 1 otherwise. The
agent, its bridge, its ports, its broker queues and its directory are
removed at the end, on failure and Ctrl-C too.
"""

import argparse
import json
import os
import random
import signal
import sys
import time

from tests.functional import agent_fixture
from tests.functional import fuzz


def positive(text):
    if int(text) < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return int(text)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks.fuzz',
        description=__doc__.split('\n\n')[0] + ' Run as root.')
    parser.add_argument('--payloads', type=positive, default=10000,
                        help='payloads to send (default 10000)')
    parser.add_argument('--seed', type=int, default=None,
                        help='hypothesis seed (default: random, printed)')
    parser.add_argument('--failures', metavar='FILE',
                        help='write the payloads of host changes and '
                             'failures, whole, to FILE as JSON')
    return parser.parse_args(argv)


def log(msg, *args):
    print(msg % args if args else msg, file=sys.stderr, flush=True)


def run(payloads, seed):
    """Start an agent, fuzz it, check its end state; (stats, problems)."""
    agent = agent_fixture.AgentFixture()
    agent.setUp()
    try:
        session = fuzz.Session(agent)
        try:
            session.start()
            log('agent %s (bridge %s) serving; %d payloads, seed %d',
                agent.host, agent.bridge, payloads, seed)
            stats = session.run(payloads, seed, progress=lambda s: log(
                '%d payloads, %d typed errors, %d accepted, %d host '
                'changes, %d failures, %.1f s', s.payloads, s.typed_errors,
                s.accepted_count, len(s.host_changes), len(s.failures),
                s.elapsed))
            problems = []
            if session.stopped:
                problems.append(session.stopped)
            else:
                problems += session.finish()
            if problems or not stats.ok():
                log('agent log (end):\n%s', agent.log(8000))
            return stats, problems
        finally:
            agent.kill()
            session.remove_leftovers()
            session.remove_broker_objects()
            session.close()
    finally:
        agent.cleanUp()


def save(path, stats):
    """The payloads of every host change and failure, as JSON."""
    records = [{'number': number, 'kind': kind, 'what': what,
                'method': payload.method, 'kwargs': payload.kwargs,
                'detail': detail}
               for kind, records in (('host change', stats.host_changes),
                                     ('failure', stats.failures))
               for number, what, payload, detail in records]
    with open(path, 'w') as f:
        json.dump(records, f, indent=1)
    log('%d payloads written to %s', len(records), path)


def _interrupt(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        log('python -m benchmarks.fuzz must run as root')
        return 2
    # Ctrl-C, and SIGTERM, stop the run through its cleanup; a shell
    # starting the run in the background would otherwise have it ignore
    # SIGINT, and SIGTERM would leave the agent and its chains behind.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    seed = random.getrandbits(32) if args.seed is None else args.seed
    started = time.monotonic()
    try:
        stats, problems = run(args.payloads, seed)
    except KeyboardInterrupt:
        log('interrupted; the agent and what it made are removed')
        return 130
    print(stats.table())
    report = stats.report(limit=100)
    if report:
        print(report)
    for problem in problems:
        print('END STATE: %s' % problem)
    if args.failures:
        save(args.failures, stats)
    log('done in %.1f s', time.monotonic() - started)
    return 0 if stats.ok() and not problems else 1


if __name__ == '__main__':
    sys.exit(main())
