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

"""etc/systemd/vifagent-agent.service against the packaging."""

import configparser
import os
import shlex
import shutil
import subprocess

import fixtures
from oslotest import base

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UNIT_NAME = 'vifagent-agent.service'
UNIT = os.path.join(TOP, 'etc', 'systemd', UNIT_NAME)


def _ini(path):
    # Case-sensitive keys, no interpolation (systemd has its own % specifiers)
    # and no special section.
    parser = configparser.ConfigParser(interpolation=None,
                                       default_section='\x00')
    parser.optionxform = str
    with open(path) as f:
        parser.read_file(f)
    return parser


def _packaging():
    """(project name, {console script: entry point}) from setup.cfg."""
    setup = _ini(os.path.join(TOP, 'setup.cfg'))
    scripts = {}
    for line in setup['entry_points']['console_scripts'].splitlines():
        if line.strip():
            name, target = line.split('=', 1)
            scripts[name.strip()] = target.strip()
    return setup['metadata']['name'], scripts


class TestAgentUnit(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.unit = _ini(UNIT)
        self.argv = shlex.split(self.unit['Service']['ExecStart'])

    def test_exec_start_runs_the_agent_console_script(self):
        _, scripts = _packaging()
        binary = self.argv[0]
        self.assertTrue(os.path.isabs(binary), binary)
        self.assertIn(os.path.basename(binary), scripts)
        self.assertEqual('vifagent.cmd.agent:main',
                         scripts[os.path.basename(binary)])

    def test_exec_start_reads_the_standard_config_file(self):
        project, _ = _packaging()
        # Where oslo.config looks for the project's file (what the agent
        # and vifagent-ctl read without --config-file).
        self.assertEqual(
            ['--config-file', '/etc/%s/%s.conf' % (project, project)],
            self.argv[1:])

    def test_service(self):
        service = self.unit['Service']
        # The agent does not call sd_notify.
        self.assertEqual('simple', service['Type'])
        self.assertEqual('on-failure', service['Restart'])
        self.assertGreater(int(service['RestartSec']), 0)
        # It stops serving within a few seconds of SIGTERM.
        self.assertEqual('SIGTERM', service['KillSignal'])
        self.assertGreaterEqual(int(service['TimeoutStopSec']), 10)
        self.assertGreaterEqual(int(service['LimitNOFILE']), 4096)
        # Root, for the privsep daemon it starts.
        self.assertNotIn('User', service)

    def test_ordering_and_install(self):
        unit = self.unit['Unit']
        for key in ('After', 'Wants'):
            self.assertEqual(
                {'network-online.target', 'openvswitch-switch.service',
                 'libvirtd.service'}, set(unit[key].split()), key)
        self.assertNotIn('Requires', unit)
        self.assertEqual('multi-user.target',
                         self.unit['Install']['WantedBy'])

    def test_systemd_analyze_verify(self):
        analyze = shutil.which('systemd-analyze')
        if not analyze:
            self.skipTest('systemd-analyze is not installed')
        # verify wants ExecStart's binary to exist: give the copy a
        # stand-in, so the check does not depend on where vifagent is
        # installed.
        tmp = self.useFixture(fixtures.TempDir()).path
        binary = os.path.join(tmp, os.path.basename(self.argv[0]))
        with open(binary, 'w') as f:
            f.write('#!/bin/sh\nexit 0\n')
        os.chmod(binary, 0o755)
        copy = os.path.join(tmp, UNIT_NAME)
        with open(UNIT) as f:
            text = f.read()
        text = text.replace('ExecStart=%s ' % self.argv[0],
                            'ExecStart=%s ' % binary)
        self.assertIn(binary, text)
        with open(copy, 'w') as f:
            f.write(text)
        proc = subprocess.run([analyze, 'verify', copy], capture_output=True,
                              text=True, cwd=tmp)
        output = proc.stdout + proc.stderr
        self.assertEqual(0, proc.returncode, output)
        # Syntax problems are only warnings, with exit status 0.
        self.assertEqual(
            [], [line for line in output.splitlines() if UNIT_NAME in line])
