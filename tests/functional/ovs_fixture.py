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

"""An Open vSwitch of the test's own: ovsdb-server and ovs-vswitchd.

A test that stops, pauses or wipes Open vSwitch uses this pair, never the
host's, which other tests use in parallel. The pair has its own run
directory, database, sockets, pidfiles and logs, and ovs-vswitchd runs in
a network namespace of its own (``netns``), with the agent under test.

Why a namespace: the userspace (netdev) datapath of every ovs-vswitchd is
called ``ovs-netdev`` and is backed by a kernel tap device of that name.
Two ovs-vswitchd processes in one namespace clash on it: the second one
cannot create the tap ("Device or resource busy") and fails every netdev
bridge ("datapath ovs-netdev already exists but cannot be opened"). In a
namespace of its own each has its own ``ovs-netdev``, and its bridges and
ports never meet the host's.

``restart(fresh=...)`` stops both daemons and starts them again, on the
same database or on a new empty one; ``stop_switch()``/``start_switch()``
and ``pause()``/``resume()`` act on one daemon.
"""

import json
import os
import signal
import subprocess
import uuid

import fixtures

from tests.functional import tls

SCHEMA = tls.SCHEMA


class PrivateOvs(fixtures.Fixture):
    """ovsdb-server (unix socket only) and ovs-vswitchd in ``netns``."""

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.netns = 'vifagent-ovs-%s' % uuid.uuid4().hex[:8]
        tls._run(['ip', 'netns', 'add', self.netns])
        self.addCleanup(tls._run, ['ip', 'netns', 'del', self.netns])
        tls._run(['ip', 'netns', 'exec', self.netns, 'ip', 'link', 'set',
                  'lo', 'up'])
        self.db = os.path.join(self.dir, 'conf.db')
        self.sock = os.path.join(self.dir, 'db.sock')
        self.connection = 'unix:' + self.sock
        # Bridge management sockets and the like go here, not to the
        # host's /var/run/openvswitch.
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir,
                        OVS_LOGDIR=self.dir)
        self.server = self.switch = None
        self._stderr = []
        self.addCleanup(self._stop_all)
        self.start_server(fresh=True)
        self.start_switch()

    # -- the daemons ------------------------------------------------------
    def _popen(self, name, cmd):
        err = open(os.path.join(self.dir, name + '.stderr'), 'ab')
        self._stderr.append(err)
        return subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)

    def start_server(self, fresh=False):
        """ovsdb-server; ``fresh``: on a new empty database."""
        if fresh:
            if os.path.exists(self.db):
                os.unlink(self.db)
            tls._run(['ovsdb-tool', 'create', self.db, SCHEMA])
        self.server = self._popen('ovsdb-server', [
            'ovsdb-server', self.db, '--remote=punix:' + self.sock,
            '--pidfile=' + os.path.join(self.dir, 'ovsdb-server.pid'),
            '--unixctl=' + os.path.join(self.dir, 'ovsdb-server.ctl'),
            '--log-file=' + os.path.join(self.dir, 'ovsdb-server.log')])
        tls.wait_for(lambda: self._alive(self.server, 'ovsdb-server') and
                     self.vsctl('--no-wait', 'init', check=False
                                ).returncode == 0,
                     10, 'private ovsdb-server')

    def start_switch(self):
        """ovs-vswitchd, in the namespace, on this database."""
        self.switch = self._popen('ovs-vswitchd', [
            'ip', 'netns', 'exec', self.netns, 'ovs-vswitchd',
            self.connection,
            '--pidfile=' + os.path.join(self.dir, 'ovs-vswitchd.pid'),
            '--unixctl=' + os.path.join(self.dir, 'ovs-vswitchd.ctl'),
            '--log-file=' + os.path.join(self.dir, 'ovs-vswitchd.log')])
        # Up once it answers and has taken the database's configuration.
        tls.wait_for(lambda: self._alive(self.switch, 'ovs-vswitchd') and
                     self._switch_ready(), 20, 'private ovs-vswitchd')

    def _switch_ready(self):
        ctl = os.path.join(self.dir, 'ovs-vswitchd.ctl')
        if subprocess.run(['ovs-appctl', '-t', ctl, 'version'],
                          capture_output=True).returncode != 0:
            return False
        cfg = self.vsctl('get', 'Open_vSwitch', '.', 'next_cfg', 'cur_cfg',
                         check=False)
        values = cfg.stdout.split()
        return cfg.returncode == 0 and len(values) == 2 and \
            values[0] == values[1]

    def _alive(self, proc, name):
        if proc.poll() is not None:
            raise AssertionError('%s exited with %s:\n%s' % (
                name, proc.returncode, self.log(name)))
        return True

    @staticmethod
    def _stop(proc):
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_switch(self):
        self._stop(self.switch)

    def stop_server(self):
        self._stop(self.server)

    def restart(self, fresh=False):
        """Stop both daemons, then start them (``fresh``: empty database)."""
        self.stop_switch()
        self.stop_server()
        self.start_server(fresh=fresh)
        self.start_switch()

    def pause(self, which='switch'):
        """SIGSTOP ovs-vswitchd (or ovsdb-server with ``'server'``)."""
        getattr(self, which).send_signal(signal.SIGSTOP)

    def resume(self, which='switch'):
        getattr(self, which).send_signal(signal.SIGCONT)

    def _stop_all(self):
        self.stop_switch()
        self.stop_server()
        for f in self._stderr:
            f.close()

    # -- looking at it ----------------------------------------------------
    def vsctl(self, *args, check=True):
        """ovs-vsctl on this database (stdout, or the completed process)."""
        cmd = ['ovs-vsctl', '--db=' + self.connection]
        if not any(a.startswith('--timeout') for a in args):
            cmd.append('--timeout=10')
        if check:
            return tls._run(cmd + list(args), env=self.env)
        return subprocess.run(cmd + list(args), capture_output=True,
                              text=True, env=self.env)

    def rows(self, table, columns):
        """Every row of ``table`` as a dict of ``columns``."""
        out = json.loads(self.vsctl('--format=json',
                                    '--columns=' + ','.join(columns),
                                    'list', table))
        return [dict(zip(columns, (_value(v) for v in row)))
                for row in out['data']]

    def ports(self, bridge):
        """``{port name: {tag, other_config, external_ids, ofport, n}}``.

        The ports on ``bridge`` as the database holds them; ``n`` counts
        Port rows of that name anywhere (more than one is a duplicate).
        """
        bridges = {b['name']: b for b in self.rows('Bridge',
                                                   ['name', 'ports'])}
        if bridge not in bridges:
            return None
        on = {u for u in _uuids(bridges[bridge]['ports'])}
        ifaces = {row['_uuid']: row for row in self.rows(
            'Interface', ['_uuid', 'name', 'external_ids', 'ofport'])}
        found = {}
        counts = {}
        for port in self.rows('Port', ['_uuid', 'name', 'interfaces', 'tag',
                                       'other_config']):
            counts[port['name']] = counts.get(port['name'], 0) + 1
            if port['_uuid'] not in on or port['name'] == bridge:
                continue
            iface = ifaces.get((_uuids(port['interfaces']) or [None])[0], {})
            found[port['name']] = {
                'tag': port['tag'], 'other_config': port['other_config'],
                'external_ids': iface.get('external_ids'),
                'ofport': iface.get('ofport')}
        for name, port in found.items():
            port['n'] = counts[name]
        return found

    def log(self, name='ovs-vswitchd', limit=6000):
        return (tls.tail(os.path.join(self.dir, name + '.log'), limit) +
                tls.tail(os.path.join(self.dir, name + '.stderr'), limit))


def _value(value):
    if isinstance(value, list) and value and value[0] == 'map':
        return {k: v for k, v in value[1]}
    if isinstance(value, list) and value and value[0] == 'set':
        return value[1]
    if isinstance(value, list) and value and value[0] == 'uuid':
        return value[1]
    return value


def _uuids(value):
    """UUIDs of a set or single reference column."""
    if isinstance(value, str):
        return [value]
    return [v[1] if isinstance(v, list) else v for v in value]
