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

"""The shell files and the devstack plugin, without devstack or root.

The plugin's phases run in bash with devstack's functions replaced by the
recording stand-ins below, and every path it writes (DEST, the
configuration directory, the state path) inside a temporary directory.
The stand-in for sudo runs the command as the test user and refuses any
absolute path outside that directory, so a phase can never reach the real
/etc or /var/lib.
"""

import configparser
import glob
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys

import fixtures
from oslo_config import cfg
from oslotest import base

from vifagent.conf import opts as vifagent_opts

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEVSTACK = os.path.join(TOP, 'devstack')
GENERATOR_CONF = os.path.join(TOP, 'etc', 'oslo-config-generator',
                              'vifagent.conf')

HOSTNAME = 'compute-test-1'
TRANSPORT_URL = 'rabbit://stackrabbit:secretrabbit@192.0.2.10:5672/'

# devstack's functions as the plugin uses them, each recording its call
# (fields separated by \x1f, calls by \x1e) in $STUB_CALLS.
STANDINS = r'''
set -o errexit -o nounset -o pipefail

_record() {
    local IFS=$'\x1f'
    printf '%s\x1e' "$*" >> "$STUB_CALLS"
}

# Exits the whole shell, whatever the context of the caller (errexit does
# not apply inside a function called from a condition).
_in_sandbox() {
    case $1 in
        "$SANDBOX"/*) return 0 ;;
    esac
    echo "stand-in refused a path outside the test directory: $1" >&2
    exit 97
}

is_service_enabled() {
    _record is_service_enabled "$@"
    [[ " $STUB_ENABLED_SERVICES " == *" $1 "* ]]
}
enable_service() { _record enable_service "$@"; }
echo_summary() { _record echo_summary "$@"; }
is_ubuntu() { _record is_ubuntu; [[ $STUB_IS_UBUNTU == yes ]]; }
install_package() { _record install_package "$@"; }
start_service() { _record start_service "$@"; }
setup_develop() { _record setup_develop "$@"; }
get_transport_url() { _record get_transport_url "$@"; echo "$STUB_TRANSPORT"; }
get_python_exec_prefix() { _record get_python_exec_prefix; echo "$STUB_BIN"; }
run_process() { _record run_process "$@"; }
stop_process() { _record stop_process "$@"; }
hostname() { echo "$STUB_HOSTNAME"; }
modinfo() { _record modinfo "$@"; [[ $STUB_OVS_MODULE == yes ]]; }

sudo() {
    _record sudo "$@"
    local arg
    for arg in "$@"; do
        if [[ $arg == /* ]]; then
            _in_sandbox "$arg"
        fi
    done
    "$@"
}

# devstack's iniset, small: creates the file, adds the section at the end
# when it is missing, replaces the option when it is set already.
iniset() {
    _record iniset "$@"
    if [[ $1 == -sudo ]]; then
        shift
    fi
    local file=$1 section=$2 option=$3 value=$4
    _in_sandbox "$file"
    if ! grep -qs "^\[$section\]" "$file"; then
        printf '\n[%s]\n' "$section" >> "$file"
    fi
    awk -v section="[$section]" -v option="$option" -v value="$value" '
        function emit() { print option " = " value; done = 1 }
        $0 == section { print; inside = 1; next }
        inside && /^\[/ { if (!done) emit(); inside = 0 }
        inside && $0 ~ ("^" option "[ \t]*=") { if (!done) emit(); next }
        { print }
        END { if (inside && !done) emit() }
    ' "$file" > "$file.new"
    mv "$file.new" "$file"
}

source "$STUB_DEVSTACK/settings"
'''

PHASE = STANDINS + 'source "$STUB_DEVSTACK/plugin.sh" "$@"\n'

SETTINGS = ('VIFAGENT_DIR', 'VIFAGENT_CONF_DIR', 'VIFAGENT_CONF',
            'VIFAGENT_STATE_PATH', 'VIFAGENT_HOST', 'VIFAGENT_RPC_TOPIC',
            'VIFAGENT_INTEGRATION_BRIDGE', 'VIFAGENT_DATAPATH_TYPE',
            'VIFAGENT_OVSDB_CONNECTION', 'VIFAGENT_LIBVIRT_URI')
SHOW_SETTINGS = STANDINS + ''.join(
    'printf "%%s=%%s\\n" %s "$%s"\n' % (name, name) for name in SETTINGS)


def shell_files():
    """Every shell file of the project."""
    files = [path for pattern in ('devstack/*', 'devstack/lib/*')
             for path in sorted(glob.glob(os.path.join(TOP, pattern)))
             if os.path.isfile(path) and not path.endswith('.rst')]
    files += sorted(glob.glob(os.path.join(TOP, 'tools', '*.sh')))
    files += [path for path in [os.path.join(TOP, '.ci', 'run')]
              if os.path.isfile(path)]
    return files


def generator_namespaces():
    """The namespaces the sample vifagent.conf is generated from."""
    with open(GENERATOR_CONF) as f:
        return [line.split('=', 1)[1].strip() for line in f
                if line.split('=', 1)[0].strip() == 'namespace']


def vifagent_conf_opts():
    """A ConfigOpts with every option a vifagent.conf can carry."""
    conf = cfg.ConfigOpts()
    for namespace in generator_namespaces():
        if namespace == 'vifagent':
            list_opts = vifagent_opts.list_opts
        else:
            (entry_point,) = importlib.metadata.entry_points(
                group='oslo.config.opts', name=namespace)
            list_opts = entry_point.load()
        for group, group_opts in list_opts():
            if str(group) == 'DEFAULT':
                group = None
            conf.register_opts(group_opts, group=group)
    return conf


def read_ini(path):
    """Every section of an ini file, DEFAULT included, as plain dicts."""
    # No section is special, so [DEFAULT] keys do not leak into the others.
    parser = configparser.ConfigParser(interpolation=None,
                                       default_section='\x00')
    parser.optionxform = str
    with open(path) as f:
        parser.read_file(f)
    return {name: dict(parser[name]) for name in parser.sections()}


class TestShellFiles(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        if not shutil.which('bash'):
            self.skipTest('bash is not installed')
        self.files = shell_files()

    def test_the_plugin_files_are_checked(self):
        for name in ('plugin.sh', 'settings', os.path.join('lib',
                                                           'vifagent')):
            self.assertIn(os.path.join(DEVSTACK, name), self.files)

    def test_bash_syntax(self):
        failures = []
        for path in self.files:
            proc = subprocess.run(['bash', '-n', path], capture_output=True,
                                  text=True)
            if proc.returncode:
                failures.append(proc.stderr.strip())
        self.assertEqual([], failures)

    def test_bashate(self):
        try:
            import bashate.bashate  # noqa: F401
        except ImportError:
            self.skipTest('bashate is not installed (it is listed in '
                          'test-requirements.txt); shell style not checked')
        # E005 (no #!), E006 (line longer than 79), E042 (local hides
        # errors) and E043 are warnings by default: make them fail too.
        # (bashate's own __main__ is broken in 2.1.1: run its module.)
        proc = subprocess.run(
            [sys.executable, '-m', 'bashate.bashate', '--error',
             'E005,E006,E042,E043'] + self.files,
            capture_output=True, text=True, cwd=TOP)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)


class TestDevstackPlugin(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        if not shutil.which('bash'):
            self.skipTest('bash is not installed')
        self.sandbox = os.path.realpath(
            self.useFixture(fixtures.TempDir()).path)
        self.dest = os.path.join(self.sandbox, 'opt', 'stack')
        self.conf_dir = os.path.join(self.sandbox, 'etc', 'vifagent')
        self.conf_file = os.path.join(self.conf_dir, 'vifagent.conf')
        self.state_path = os.path.join(self.sandbox, 'var', 'lib',
                                       'vifagent')
        self.bin_dir = os.path.join(self.sandbox, 'venv', 'bin')
        self.calls_file = os.path.join(self.sandbox, 'calls')
        os.makedirs(self.dest)

    def env(self, **overrides):
        # Built from nothing, so no VIFAGENT_* of the caller's environment
        # reaches the plugin.
        env = {
            'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
            'HOME': self.sandbox,
            'LC_ALL': 'C',
            'SANDBOX': self.sandbox,
            'STUB_CALLS': self.calls_file,
            'STUB_DEVSTACK': DEVSTACK,
            'STUB_ENABLED_SERVICES': 'rabbit vifagent',
            'STUB_IS_UBUNTU': 'yes',
            'STUB_OVS_MODULE': 'yes',
            'STUB_TRANSPORT': TRANSPORT_URL,
            'STUB_BIN': self.bin_dir,
            'STUB_HOSTNAME': HOSTNAME,
            # What devstack's stackrc and local.conf give every plugin.
            'DEST': self.dest,
            'STACK_USER': str(os.getuid()),
            'ENABLE_DEBUG_LOG_LEVEL': 'True',
            'VIFAGENT_CONF_DIR': self.conf_dir,
            'VIFAGENT_STATE_PATH': self.state_path,
        }
        env.update(overrides)
        return {key: value for key, value in env.items() if value is not None}

    def run_bash(self, script, *args, **overrides):
        if os.path.exists(self.calls_file):
            os.unlink(self.calls_file)
        return subprocess.run(['bash', '-c', script, 'plugin'] + list(args),
                              env=self.env(**overrides), capture_output=True,
                              text=True, cwd=self.sandbox)

    def bash(self, script, *args, **overrides):
        """Run script in bash; return (stdout, [call, ...])."""
        proc = self.run_bash(script, *args, **overrides)
        self.assertEqual(0, proc.returncode,
                         'bash exited %d:\n%s%s' % (proc.returncode,
                                                    proc.stdout,
                                                    proc.stderr))
        calls = []
        if os.path.exists(self.calls_file):
            with open(self.calls_file) as f:
                calls = [record.split('\x1f')
                         for record in f.read().split('\x1e')[:-1]]
        return proc.stdout, calls

    def phase(self, *args, **overrides):
        """Run one plugin phase; return its calls to devstack functions."""
        calls = self.bash(PHASE, *args, **overrides)[1]
        for call in calls:
            for arg in call[1:]:
                if arg.startswith('/'):
                    self.assertTrue(arg.startswith(self.sandbox + '/'),
                                    '%s outside the test directory' % call)
        return calls

    def settings(self, **overrides):
        out = self.bash(SHOW_SETTINGS, **overrides)[0]
        return dict(line.split('=', 1) for line in out.splitlines())

    @staticmethod
    def named(calls, *names):
        return [call for call in calls if call[0] in names]

    def test_stand_ins_refuse_paths_outside_the_test_directory(self):
        # "true" ignores its arguments: nothing can happen if this fails.
        for command in ('sudo true /etc/vifagent',
                        'if sudo true /var/lib/vifagent; then :; fi',
                        'iniset /etc/vifagent/vifagent.conf a b c'):
            proc = self.run_bash(STANDINS + command)
            self.assertEqual(97, proc.returncode, command)
            self.assertIn('refused', proc.stderr)

    # -- settings -------------------------------------------------------------
    def test_settings_defaults(self):
        settings = self.settings(VIFAGENT_CONF_DIR=None,
                                 VIFAGENT_STATE_PATH=None)
        self.assertEqual({
            'VIFAGENT_DIR': os.path.join(self.dest, 'vifagent'),
            'VIFAGENT_CONF_DIR': '/etc/vifagent',
            'VIFAGENT_CONF': '/etc/vifagent/vifagent.conf',
            'VIFAGENT_STATE_PATH': '/var/lib/vifagent',
            'VIFAGENT_HOST': HOSTNAME,
            'VIFAGENT_RPC_TOPIC': 'vifagent',
            'VIFAGENT_INTEGRATION_BRIDGE': 'br-int',
            'VIFAGENT_DATAPATH_TYPE': 'system',
            'VIFAGENT_OVSDB_CONNECTION':
                'unix:/var/run/openvswitch/db.sock',
            'VIFAGENT_LIBVIRT_URI': 'qemu:///system',
        }, settings)

    def test_settings_enable_the_service(self):
        calls = self.bash(SHOW_SETTINGS)[1]
        self.assertIn(['enable_service', 'vifagent'], calls)

    def test_settings_follow_local_conf(self):
        local = {
            'VIFAGENT_DIR': os.path.join(self.sandbox, 'src', 'vifagent'),
            'VIFAGENT_CONF': os.path.join(self.sandbox, 'agent.conf'),
            'VIFAGENT_HOST': 'other-host',
            'VIFAGENT_RPC_TOPIC': 'vifagent-test',
            'VIFAGENT_INTEGRATION_BRIDGE': 'br-test',
            'VIFAGENT_DATAPATH_TYPE': 'netdev',
            'VIFAGENT_OVSDB_CONNECTION': 'tcp:127.0.0.1:6640',
            'VIFAGENT_LIBVIRT_URI': 'qemu+tcp://compute/system',
        }
        settings = self.settings(**local)
        for name, value in local.items():
            self.assertEqual(value, settings[name])

    def test_datapath_without_the_kernel_module(self):
        settings = self.settings(STUB_OVS_MODULE='no')
        # A module already loaded counts even where modinfo cannot see it.
        expected = ('system' if os.path.isdir('/sys/module/openvswitch')
                    else 'netdev')
        self.assertEqual(expected, settings['VIFAGENT_DATAPATH_TYPE'])

    # -- stack install --------------------------------------------------------
    def test_install_on_debian_and_ubuntu(self):
        calls = self.phase('stack', 'install')
        self.assertEqual(
            [['install_package', 'openvswitch-switch',
              'libvirt-daemon-system', 'libvirt-dev', 'pkg-config'],
             ['start_service', 'openvswitch-switch'],
             ['setup_develop', os.path.join(self.dest, 'vifagent')]],
            self.named(calls, 'install_package', 'start_service',
                       'setup_develop'))
        self.assertEqual([], self.named(calls, 'iniset', 'run_process'))

    def test_install_elsewhere(self):
        calls = self.phase('stack', 'install', STUB_IS_UBUNTU='no')
        self.assertEqual(
            [['install_package', 'openvswitch', 'libvirt', 'libvirt-devel',
              'pkgconf-pkg-config'],
             ['start_service', 'openvswitch']],
            self.named(calls, 'install_package', 'start_service'))

    # -- stack post-config ----------------------------------------------------
    def test_post_config_writes_the_configuration(self):
        self.phase('stack', 'post-config')
        self.assertEqual({
            'DEFAULT': {'transport_url': TRANSPORT_URL,
                        'host': HOSTNAME,
                        'debug': 'True'},
            'agent': {'state_path': self.state_path,
                      'rpc_topic': 'vifagent'},
            'ovs': {'integration_bridge': 'br-int',
                    'datapath_type': 'system',
                    'ovsdb_connection': 'unix:/var/run/openvswitch/db.sock'},
            'libvirt': {'connection_uri': 'qemu:///system'},
        }, read_ini(self.conf_file))

    def test_post_config_uses_real_option_names(self):
        self.phase('stack', 'post-config',
                   VIFAGENT_DATAPATH_TYPE='netdev',
                   VIFAGENT_INTEGRATION_BRIDGE='br-test')
        conf = vifagent_conf_opts()
        conf(['--config-file', self.conf_file], project='vifagent',
             default_config_files=[], default_config_dirs=[])
        self.addCleanup(conf.reset)
        for section, options in read_ini(self.conf_file).items():
            if section != 'DEFAULT':
                self.assertIn(section, conf, 'no vifagent option group')
            known = conf if section == 'DEFAULT' else conf[section]
            for name in options:
                self.assertIn(name, known,
                              '[%s] %s is no vifagent option' % (section,
                                                                 name))
        # Read back through the options' types and choices.
        self.assertEqual(TRANSPORT_URL, conf.transport_url)
        self.assertEqual(HOSTNAME, conf.host)
        self.assertTrue(conf.debug)
        self.assertEqual(self.state_path, conf.agent.state_path)
        self.assertEqual('vifagent', conf.agent.rpc_topic)
        self.assertEqual('br-test', conf.ovs.integration_bridge)
        self.assertEqual('netdev', conf.ovs.datapath_type)
        self.assertEqual('unix:/var/run/openvswitch/db.sock',
                         conf.ovs.ovsdb_connection)

    def test_post_config_starts_from_scratch(self):
        self.phase('stack', 'post-config')
        with open(self.conf_file) as f:
            first = f.read()
        with open(self.conf_file, 'a') as f:
            f.write('\n[stale]\nleft = over\n')
        self.phase('stack', 'post-config')
        with open(self.conf_file) as f:
            self.assertEqual(first, f.read())

    # -- stack extra ----------------------------------------------------------
    def test_extra_runs_the_agent_as_root_without_sudo(self):
        calls = self.phase('stack', 'extra')
        (run,) = self.named(calls, 'run_process')
        service, command, group, user = run[1:]
        self.assertEqual(('vifagent', '', 'root'), (service, group, user))
        argv = shlex.split(command)
        self.assertNotIn('sudo', argv)
        self.assertTrue(os.path.isabs(argv[0]), command)
        self.assertEqual(os.path.join(self.bin_dir, 'vifagent-agent'),
                         argv[0])
        self.assertEqual(['--config-file', self.conf_file], argv[1:])

    # -- unstack and clean ----------------------------------------------------
    def test_unstack_stops_the_agent(self):
        calls = self.phase('unstack')
        self.assertEqual([['stop_process', 'vifagent']],
                         self.named(calls, 'stop_process', 'run_process',
                                    'install_package', 'iniset', 'sudo'))

    def test_clean_removes_configuration_and_state(self):
        for phase in (('stack', 'install'), ('stack', 'post-config'),
                      ('stack', 'extra')):
            self.phase(*phase)
        # What the agent leaves there: its store.
        os.makedirs(self.state_path)
        with open(os.path.join(self.state_path, 'vifagent.sqlite'), 'w'):
            pass
        self.assertTrue(os.path.isfile(self.conf_file))

        self.phase('unstack')
        calls = self.phase('clean')

        self.assertFalse(os.path.exists(self.conf_dir))
        self.assertFalse(os.path.exists(self.state_path))
        self.assertIn(['sudo', 'rm', '-rf', self.conf_dir, self.state_path],
                      calls)
        self.assertEqual([], self.named(calls, 'run_process'))
        # Only what the plugin made is gone.
        self.assertTrue(os.path.isdir(self.dest))
        self.assertTrue(os.path.isdir(os.path.join(self.sandbox, 'etc')))

    def test_clean_of_a_clean_host(self):
        self.phase('clean')
        self.assertFalse(os.path.exists(self.conf_dir))

    def test_disabled_service_does_nothing(self):
        for phase in (('stack', 'install'), ('stack', 'post-config'),
                      ('stack', 'extra'), ('unstack',), ('clean',)):
            calls = self.phase(*phase, STUB_ENABLED_SERVICES='rabbit')
            self.assertEqual(
                [], self.named(calls, 'install_package', 'setup_develop',
                               'iniset', 'run_process', 'stop_process',
                               'sudo'), phase)
        self.assertFalse(os.path.exists(self.conf_dir))
