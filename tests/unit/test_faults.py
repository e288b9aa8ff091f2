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

import os
import re
import signal
import subprocess
import sys

import fixtures
from oslotest import base

import vifagent
from vifagent import faults

PACKAGE = os.path.dirname(os.path.abspath(vifagent.__file__))


def run(spec, *points, once=None):
    """A process armed with ``spec`` passing ``points``; its return code."""
    env = dict(os.environ, VIFAGENT_FAULTS=spec)
    env.pop(faults.ONCE_ENV, None)
    if once:
        env[faults.ONCE_ENV] = once
    code = 'from vifagent import faults\n' + ''.join(
        'faults.point(%r)\n' % p for p in points)
    return subprocess.run([sys.executable, '-c', code], env=env,
                          timeout=60).returncode


class TestParse(base.BaseTestCase):

    def test_items(self):
        self.assertEqual(
            {'bind.stored': (1, 'kill'), 'privsep.mid_batch': (3, 'hang')},
            faults.parse(' bind.stored , privsep.mid_batch@3=hang,'))
        self.assertEqual({}, faults.parse(''))

    def test_errors(self):
        for spec in ('nowhere', 'bind.stored=explode', 'bind.stored@0',
                     'bind.stored@x'):
            self.assertRaises(ValueError, faults.parse, spec)


class TestPoints(base.BaseTestCase):

    def test_code_names_only_known_points_and_uses_them_all(self):
        used = set()
        for top, _, files in os.walk(PACKAGE):
            for name in files:
                if name.endswith('.py'):
                    with open(os.path.join(top, name)) as f:
                        used.update(re.findall(
                            r"faults\.point\('([^']+)'\)", f.read()))
        self.assertEqual(set(faults.POINTS), used)

    def test_inert_without_the_environment(self):
        self.assertEqual(0, run('', *faults.POINTS))

    def test_kill_on_the_chosen_hit(self):
        self.assertEqual(0, run('bind.stored@2', 'bind.stored'))
        self.assertEqual(-signal.SIGKILL,
                         run('bind.stored@2', 'bind.stored', 'sync.stored',
                             'bind.stored'))

    def test_once_across_processes(self):
        once = self.useFixture(fixtures.TempDir()).path
        self.assertEqual(-signal.SIGKILL,
                         run('sync.stored', 'sync.stored', once=once))
        self.assertEqual(0, run('sync.stored', 'sync.stored', once=once))
        self.assertEqual(['sync.stored'], os.listdir(once))
