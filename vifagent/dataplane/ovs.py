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

"""Open vSwitch side of the dataplane, on ovsdbapp's native IDL.

Reads come from the IDL's in-memory replica (no OVSDB round trip, no
transaction). Writes for any number of ports go into one transaction,
committed with ``check_error=True`` so a failed write raises instead of
being logged, and the transaction waits until ovs-vswitchd has taken the
new configuration.

The connection is ``unix:`` (the default), ``ssl:`` or ``tcp:``. For
``ssl:`` python-ovs takes the client key, certificate and CA certificate
as settings of the whole process (``ovs.stream.Stream``), which is one
more reason there is one OVSDB connection per process (``_Api``).
"""

import os
import queue
import threading
import time

from oslo_log import log as logging
from ovs import stream as ovs_stream
from ovsdbapp.backend.ovs_idl import command
from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp import exceptions as ovsdbapp_exc
from ovsdbapp.schema.open_vswitch import impl_idl

from vifagent import binding
from vifagent import exception
from vifagent import state

LOG = logging.getLogger(__name__)

# Seconds between attempts to reach an OVSDB that was away at start.
_ATTACH_RETRY = 2.0
# Shortest OVSDB keepalive probe interval, seconds.
_MIN_PROBE = 5
# The last wait of a transaction past its timeout (see _Transaction).
_LAST_WAIT = 0.1
# Seconds a caller waits for a transaction's result beyond the longest
# the connection thread can take over it.
_RESULT_GRACE = 5

# Only what the agent reads or writes is replicated: the IDL then ignores
# the statistics ovs-vswitchd rewrites every few seconds on every
# Interface, which would otherwise dominate its CPU and memory.
_COLUMNS = {
    'Open_vSwitch': ['bridges', 'cur_cfg', 'next_cfg'],
    'Bridge': ['name', 'ports', 'datapath_type', 'external_ids'],
    'Port': ['name', 'interfaces', 'tag', 'other_config', 'external_ids'],
    'Interface': ['name', 'type', 'external_ids', 'ofport', 'error',
                  'ifindex'],
}


def _optional(value):
    """Unwrap an optional OVSDB column (a list of zero or one value)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class _Idl(connection.OvsdbIdl):
    """The IDL, telling listeners which rows changed.

    Listeners run in the OVSDB connection thread with its lock held: they
    must only note what changed (``(event, table, name)``) and return.
    """

    listeners = []

    def notify(self, event, row, updates=None):
        table = row._table.name
        name = getattr(row, 'name', None) if table != 'Open_vSwitch' \
            else None
        for listener in list(self.listeners):
            try:
                listener(event, table, name)
            except Exception:
                LOG.exception('OVSDB event listener failed')


def ssl_remotes(connection_string):
    """The ``ssl:`` remotes among a comma-separated connection string."""
    return [r for r in (c.strip() for c in connection_string.split(','))
            if r.startswith('ssl:')]


def check_ssl_files(connection_string, key_file, cert_file, ca_cert_file):
    """Refuse an ``ssl:`` connection whose TLS files are unset or unreadable.

    python-ovs would otherwise fail later and vaguely (inside its
    connection thread, retrying for ever) or, worse, never say which file
    is wrong. Returns ``(key, cert, ca_cert)`` for an ``ssl:`` connection
    and None for any other.
    """
    remotes = ssl_remotes(connection_string)
    if not remotes:
        return None
    files = (('ssl_key_file', key_file), ('ssl_cert_file', cert_file),
             ('ssl_ca_cert_file', ca_cert_file))
    unset = [name for name, path in files if not path]
    if unset:
        raise exception.OvsdbError(
            reason='%s needs [ovs] ssl_key_file, ssl_cert_file and '
                   'ssl_ca_cert_file; not set: %s' % (
                       ','.join(remotes), ', '.join(unset)))
    unreadable = ['%s (%s)' % (name, path) for name, path in files
                  if not os.access(path, os.R_OK)]
    if unreadable:
        raise exception.OvsdbError(
            reason='%s: cannot read %s' % (','.join(remotes),
                                           ', '.join(unreadable)))
    return key_file, cert_file, ca_cert_file


def _reason(error):
    """A failure's text; ovsdbapp raises some exceptions str() fails on.

    idlutils.wait_for_change raises TimeoutException() without the
    arguments its message needs, and that exception's str() then raises.
    """
    try:
        return str(error)
    except Exception:
        return '%s: OVSDB transaction timed out' % type(error).__name__


def _marked(port):
    ifaces = port.interfaces
    return bool(ifaces) and state.OWNER_KEY in ifaces[0].external_ids


class _ApplyPorts(command.BaseCommand):
    """Add, change and delete many ports in one transaction."""

    def __init__(self, api, bridge, adds, updates, deletes):
        super().__init__(api)
        self.bridge = bridge
        self.adds = adds
        self.updates = updates
        self.deletes = deletes

    def __str__(self):
        # ovsdbapp names the commands in its timeout errors and debug
        # lines; listing every port would put a batch's whole contents
        # into the reason of each of its ports (megabytes for a big one).
        return '%s(bridge=%s, %d adds, %d updates, %d deletes)' % (
            self.__class__.__name__, self.bridge, len(self.adds),
            len(self.updates), len(self.deletes))

    __repr__ = __str__

    def run_idl(self, txn):
        tables = self.api.tables
        bridges = {b.name: b for b in tables['Bridge'].rows.values()}
        owner_of = {p.uuid: b for b in bridges.values() for p in b.ports}
        ports = {p.name: p for p in tables['Port'].rows.values()}
        for name in self.deletes:
            port = ports.pop(name, None)
            if port is None:
                continue
            br = owner_of.get(port.uuid)
            if br is not None:
                br.delvalue('ports', port)
            port.delete()
        if self.adds:
            try:
                br = bridges[self.bridge]
            except KeyError:
                raise exception.OvsdbError(
                    reason='bridge %s does not exist' % self.bridge)
        for spec in self.adds:
            iface = txn.insert(tables['Interface'])
            iface.name = spec.name
            iface.external_ids = spec.external_ids
            port = txn.insert(tables['Port'])
            port.name = spec.name
            port.interfaces = [iface]
            port.tag = spec.tag
            port.other_config = spec.other_config
            br.addvalue('ports', port)
            txn.expected_ifaces.add(iface.uuid)
        for spec in self.updates:
            port = ports.get(spec.name)
            if port is None:
                raise exception.OvsdbError(
                    reason='port %s vanished' % spec.name)
            if spec.tag is not None:
                port.tag = spec.tag
            for key, value in spec.other_config.items():
                port.setkey('other_config', key, value)
            for iface in port.interfaces:
                for key, value in spec.external_ids.items():
                    iface.setkey('external_ids', key, value)


class _Transaction(impl_idl.OvsVsctlTransaction):
    """ovsdbapp's transaction: every wait bounded, no false timeout.

    When a commit must be retried after the timeout has passed (the
    session to a stalled ovsdb-server was dropped), ovsdbapp waits for
    the reconnection with the time remaining as its timeout, and takes
    zero or less as no timeout at all: the transaction, and the
    connection's lock every read takes, would then be held for as long
    as the server stalls. The remaining time never drops below
    ``_LAST_WAIT``, so the transaction fails instead.

    A committed transaction is not a failed one. ovsdbapp's caller waits
    for the result exactly as long as the connection thread waits for
    ovs-vswitchd to take the new configuration, so a slow ovs-vswitchd
    (a big batch, a busy host) turned a committed transaction into a
    timeout error. Here the caller waits longer than the connection
    thread can take (the commit is bounded by the session's probe), and
    ovs-vswitchd still busy after the timeout is a warning: the engine
    then verifies each port as ovs-vswitchd attaches it.
    """

    def time_remaining(self):
        return max(super().time_remaining(), _LAST_WAIT)

    def commit(self):
        self.ovsdb_connection.queue_txn(self)
        # do_commit: at most two probe intervals for the commit (a silent
        # server is dropped), then the timeout for ovs-vswitchd.
        wait = self.timeout + 2 * max(self.ovsdb_connection.timeout,
                                      _MIN_PROBE) + _RESULT_GRACE
        try:
            result = self.results.get(timeout=wait)
        except queue.Empty as e:
            raise ovsdbapp_exc.TimeoutException(
                commands=self.commands, timeout=wait,
                cause='no result from the OVSDB connection thread') from e
        if isinstance(result, idlutils.ExceptionResult):
            if self.log_errors:
                LOG.error(result.tb)
            if self.check_error:
                raise result.ex
        return result

    def post_commit(self, txn):
        for cmd in self.commands:
            cmd.post_commit(txn)
        try:
            self.do_post_commit(txn)
        except ovsdbapp_exc.TimeoutException:
            LOG.warning('ovs-vswitchd has not taken the configuration of '
                        '%s within %.1f s; its ports are verified as it '
                        'attaches them', ', '.join(map(str, self.commands)),
                        self.timeout)
        except Exception:
            LOG.exception('ovs-vswitchd failed part of %s',
                          ', '.join(map(str, self.commands)))


class _Api(impl_idl.OvsdbIdl):
    """The ovsdbapp API with a connection private to vifagent.

    ovsdbapp keeps one connection per Backend class for the whole process
    and silently ignores the connection given to later instances. This
    subclass gives vifagent its own class-level slot, counts its users and
    refuses a second, different OVSDB address (or other TLS files, which
    python-ovs also holds for the whole process) instead of ignoring it.
    """

    _ovsdb_connection = None
    _remote = None
    _ssl = None
    _users = 0
    _guard = threading.Lock()

    def create_transaction(self, check_error=False, log_errors=True,
                           timeout=None, **kwargs):
        """A bounded transaction; ``timeout`` in seconds (default: all)."""
        return _Transaction(self, self.ovsdb_connection, timeout=timeout,
                            check_error=check_error, log_errors=log_errors)

    @classmethod
    def attach(cls, remote, timeout, ssl_files=None):
        """Join the process's connection, or make it.

        ``ssl_files`` is ``(key, cert, ca_cert)`` for an ``ssl:`` remote,
        set on python-ovs's streams before the first connection attempt.
        """
        with cls._guard:
            conn = cls._ovsdb_connection
            if conn is not None and cls._remote != remote:
                raise exception.OvsdbError(
                    reason='already connected to %s, not %s' % (
                        cls._remote, remote))
            if conn is not None and cls._ssl != ssl_files:
                raise exception.OvsdbError(
                    reason='already connected to %s with other TLS '
                           'files' % remote)
            if conn is None:
                if ssl_files is not None:
                    key, cert, ca_cert = ssl_files
                    ovs_stream.Stream.ssl_set_private_key_file(key)
                    ovs_stream.Stream.ssl_set_certificate_file(cert)
                    ovs_stream.Stream.ssl_set_ca_cert_file(ca_cert)
                helper = idlutils.get_schema_helper(remote, 'Open_vSwitch')
                for table, columns in _COLUMNS.items():
                    helper.register_columns(table, columns)
                idl = _Idl(remote, helper)
                # python-ovs never probes a unix: session: an ovsdb-server
                # that stalls (stopped, or wedged) would then hold a
                # transaction, and with it the connection's lock that
                # every read takes, for as long as it stalls. Probed, a
                # silent server is dropped after twice this interval and
                # the transaction fails instead.
                idl._session.reconnect.set_probe_interval(
                    max(timeout, _MIN_PROBE) * 1000)
                conn = connection.Connection(idl, timeout=timeout)
                cls._remote = remote
                cls._ssl = ssl_files
            api = cls(conn)
            cls._users += 1
            return api

    @classmethod
    def detach(cls):
        with cls._guard:
            cls._users -= 1
            if cls._users == 0 and cls._ovsdb_connection is not None:
                cls._ovsdb_connection.stop()
                cls._ovsdb_connection = None
                cls._remote = cls._ssl = None


class OvsDataplane:
    """The integration bridge and the agent's ports on it."""

    def __init__(self, connection_string, bridge, timeout=10,
                 datapath_type='system', ssl_key_file=None,
                 ssl_cert_file=None, ssl_ca_cert_file=None,
                 timeout_per_port=0.2, max_ports=100):
        self.connection_string = connection_string
        self.bridge = bridge
        self.timeout = timeout
        self.timeout_per_port = timeout_per_port
        self.max_ports = max_ports
        self.datapath_type = datapath_type
        self.ssl_key_file = ssl_key_file
        self.ssl_cert_file = ssl_cert_file
        self.ssl_ca_cert_file = ssl_ca_cert_file
        self.api = None
        self._conn = None
        self._stopping = threading.Event()
        self._attacher = None

    def start(self, ensure_bridge=True, wait=True):
        """Connect (or join the process's connection); ensure the bridge.

        An ``ssl:`` connection without its three TLS files is refused here,
        before any connection attempt, with an OvsdbError naming them.
        Without ``wait`` an OVSDB that cannot be reached now is tried again
        in the background: until it answers, connected() is False and
        every read or write raises OvsdbError. The agent starts this way,
        so it serves reads and health while Open vSwitch is away.
        """
        ssl_files = check_ssl_files(
            self.connection_string, self.ssl_key_file, self.ssl_cert_file,
            self.ssl_ca_cert_file)
        if any(r.strip().startswith('tcp:')
               for r in self.connection_string.split(',')):
            LOG.warning('OVSDB connection %s is neither encrypted nor '
                        'authenticated; use unix: or ssl:',
                        self.connection_string)
        if wait:
            self._attach(ssl_files)
            if ensure_bridge:
                self.ensure_bridge()
            return
        try:
            self._attach(ssl_files)
        except Exception as e:
            LOG.warning('OVSDB %s cannot be reached (%s); trying again '
                        'every %.0f s', self.connection_string, e,
                        _ATTACH_RETRY)
            self._attacher = threading.Thread(
                target=self._attach_later, args=(ssl_files,),
                name='ovsdb-attach', daemon=True)
            self._attacher.start()

    def _attach(self, ssl_files):
        api = _Api.attach(self.connection_string, self.timeout, ssl_files)
        self._conn = api.ovsdb_connection
        self.api = api

    def _attach_later(self, ssl_files):
        """Try to connect until it works or the dataplane stops."""
        while not self._stopping.wait(_ATTACH_RETRY):
            try:
                self._attach(ssl_files)
            except Exception as e:
                LOG.debug('OVSDB still unreachable: %s', e)
                continue
            LOG.info('Connected to OVSDB %s', self.connection_string)
            return

    def _require(self):
        """The API, or OvsdbError while OVSDB was never reached."""
        api = self.api
        if api is None:
            raise exception.OvsdbError(
                reason='not connected to OVSDB %s yet' %
                self.connection_string)
        return api

    def stop(self):
        self._stopping.set()
        if self._attacher is not None:
            self._attacher.join()
            self._attacher = None
        if self.api is not None:
            _Api.detach()
            self.api = self._conn = None

    @staticmethod
    def add_listener(listener):
        """Call ``listener(event, table, name)`` on every row change."""
        _Idl.listeners.append(listener)

    @staticmethod
    def remove_listener(listener):
        if listener in _Idl.listeners:
            _Idl.listeners.remove(listener)

    def connected(self):
        """True while the IDL's session with ovsdb-server is up.

        Read without the connection's lock: ovsdbapp holds it for a whole
        transaction, and a health check must answer during a plug. The
        answer is one boolean of the session, safe to read as it changes.
        """
        conn = self._conn
        return conn is not None and conn.idl._session.is_connected()

    def bridge_exists(self):
        api = self._require()
        with self._conn.lock:
            return any(b.name == self.bridge for b in
                       api.tables['Bridge'].rows.values())

    def ensure_bridge(self):
        """Create the integration bridge if it is missing; never change it."""
        if self.bridge_exists():
            return False
        LOG.info('Creating integration bridge %s (datapath %s)',
                 self.bridge, self.datapath_type)
        api = self._require()
        try:
            api.add_br(self.bridge, may_exist=True,
                       datapath_type=self.datapath_type).execute(
                           check_error=True)
        except Exception as e:
            raise exception.OvsdbError(
                reason='cannot create bridge %s: %s' % (
                    self.bridge, _reason(e)))
        return True

    def bridge_external_ids(self):
        """The integration bridge's external_ids ({} while it is absent)."""
        api = self._require()
        with self._conn.lock:
            bridge = idlutils.row_by_value(api.idl, 'Bridge', 'name',
                                           self.bridge, None)
            return dict(bridge.external_ids) if bridge else {}

    def set_bridge_external_ids(self, values):
        """Set keys of the integration bridge's external_ids."""
        api = self._require()
        try:
            api.db_set('Bridge', self.bridge,
                       ('external_ids', values)).execute(check_error=True)
        except Exception as e:
            raise exception.OvsdbError(
                reason='cannot mark bridge %s: %s' % (
                    self.bridge, _reason(e)))

    def tags_in_use(self):
        """The VLAN tags of the ports on the integration bridge now."""
        api = self._require()
        with self._conn.lock:
            bridge = idlutils.row_by_value(api.idl, 'Bridge', 'name',
                                           self.bridge, None)
            ports = list(bridge.ports) if bridge else []
            return {tag for tag in (_optional(p.tag) for p in ports)
                    if tag is not None}

    def observe(self, names=None):
        """Return ``{name: OvsPort}`` from the IDL replica.

        With ``names``, those ports are found through the IDL's name index;
        otherwise every port named like a qvo or carrying the owner marker.
        """
        result = {}
        api = self._require()
        with self._conn.lock:
            idl = api.idl
            if names is None:
                rows = [p for p in idl.tables['Port'].rows.values()
                        if p.name.startswith(binding.OVS_VETH_PREFIX) or
                        _marked(p)]
            else:
                rows = [row for row in (
                    idlutils.row_by_value(idl, 'Port', 'name', name, None)
                    for name in names) if row is not None]
            if not rows:
                return result
            bridge = idlutils.row_by_value(idl, 'Bridge', 'name',
                                           self.bridge, None)
            where = dict.fromkeys(
                (p.uuid for p in bridge.ports), self.bridge) if bridge \
                else {}
            if any(port.uuid not in where for port in rows):
                where.update(self._other_bridges_ports())
            for port in rows:
                ifaces = port.interfaces
                iface = ifaces[0] if ifaces else None
                result[port.name] = state.OvsPort(
                    name=port.name,
                    bridge=where.get(port.uuid),
                    tag=_optional(port.tag),
                    other_config=dict(port.other_config),
                    external_ids=dict(iface.external_ids) if iface else {},
                    ofport=_optional(iface.ofport) if iface else None,
                    error=_optional(iface.error) if iface else None,
                    ifindex=_optional(iface.ifindex) if iface else None)
        return result

    def _other_bridges_ports(self):
        """``{port uuid: bridge name}`` over the other bridges, read once.

        Looking each foreign port's bridge up by scanning the bridges cost
        bridges x ports per port: seconds, with the connection's lock held,
        on a host whose other bridges hold many qvo ports.
        """
        return {port.uuid: bridge.name
                for bridge in self.api.idl.tables['Bridge'].rows.values()
                if bridge.name != self.bridge
                for port in bridge.ports}

    def apply(self, adds, updates, deletes):
        """Commit port changes; return the transactions made.

        At most ``max_ports`` changes go into one transaction, deletions
        first; each may take ``timeout`` plus ``timeout_per_port`` for
        each of its changes, since ovs-vswitchd's work grows with them. A
        failed transaction raises OvsdbError and the rest are not tried:
        the caller's next pass observes what was committed.
        """
        if not (adds or updates or deletes):
            return 0
        api = self._require()
        changes = [('delete', name) for name in deletes] + \
            [('add', spec) for spec in adds] + \
            [('update', spec) for spec in updates]
        count = 0
        slowest = 0.0
        for start in range(0, len(changes), self.max_ports):
            chunk = changes[start:start + self.max_ports]
            cmd = _ApplyPorts(
                api, self.bridge,
                [spec for kind, spec in chunk if kind == 'add'],
                [spec for kind, spec in chunk if kind == 'update'],
                [name for kind, name in chunk if kind == 'delete'])
            timeout = self.timeout + self.timeout_per_port * len(chunk)
            started = time.monotonic()
            try:
                with api.transaction(check_error=True,
                                     timeout=timeout) as txn:
                    txn.add(cmd)
            except exception.OvsdbError:
                raise
            except Exception as e:
                raise exception.OvsdbError(reason=_reason(e))
            took = time.monotonic() - started
            slowest = max(slowest, took)
            # Half the allowance used: the timeouts may need raising.
            (LOG.warning if took > timeout / 2 else LOG.debug)(
                'OVSDB transaction of %d port changes took %.2f s (timeout '
                '%.1f s)', len(chunk), took, timeout)
            count += 1
        if count > 1:
            LOG.info('%d port changes in %d OVSDB transactions of at most '
                     '%d; the slowest took %.2f s', len(changes), count,
                     self.max_ports, slowest)
        return count
