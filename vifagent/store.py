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

"""Durable desired state: bindings and per-network local VLANs in SQLite.

A binding is committed (WAL, synchronous=FULL) before the caller hears
back, so a kill -9 right after a reply loses nothing acknowledged. The
store also enforces the rules that must hold across bindings: revision
ordering, one local VLAN per network, no two ports whose device names
would collide, and no two ports for the same VM NIC (instance and MAC),
which would fight over one tap.
"""

import dataclasses
import json
import os
import sqlite3
import threading
import uuid

from oslo_log import log as logging

from vifagent import binding as binding_mod
from vifagent import exception
from vifagent import faults
from vifagent import secgroup as secgroup_mod

LOG = logging.getLogger(__name__)

DB_NAME = 'vifagent.sqlite'
MIN_VLAN = 1
MAX_VLAN = 4094
#: Conntrack zones of ports with port security (one each).
MIN_ZONE = 1
MAX_ZONE = 65535

CREATED = 'created'
UPDATED = 'updated'
UNCHANGED = 'unchanged'

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    port_id TEXT PRIMARY KEY,
    name_key TEXT NOT NULL,
    network_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS bindings_network ON bindings (network_id);
CREATE INDEX IF NOT EXISTS bindings_name_key ON bindings (name_key);
CREATE INDEX IF NOT EXISTS bindings_vm_nic ON bindings (
    json_extract(data, '$.instance_uuid'),
    json_extract(data, '$.mac_address'));
CREATE TABLE IF NOT EXISTS reported (
    port_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS unbinding (
    port_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vlans (
    network_id TEXT PRIMARY KEY,
    vlan INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS security_groups (
    id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS zones (
    port_id TEXT PRIMARY KEY,
    zone INTEGER NOT NULL UNIQUE
);
"""


_SELECT = 'SELECT port_id, network_id, revision, data FROM bindings'


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A stored binding that no longer validates, and why."""

    port_id: str
    network_id: str
    revision: int
    reason: str


class Store:
    """Bindings and VLAN allocations of one agent."""

    def __init__(self, state_path, default_mtu=1500):
        """Open (or create) the store; a damaged one is refused.

        Raises StoreUnavailable when the file is not a sound SQLite
        database or cannot be opened for writing: an agent must never run
        on an empty store in place of a damaged one.
        """
        self.path = os.path.join(state_path, DB_NAME)
        self.default_mtu = default_mtu
        self._lock = threading.Lock()
        try:
            os.makedirs(state_path, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._check_sound()
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('PRAGMA synchronous=FULL')
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as e:
            if isinstance(e, sqlite3.DatabaseError) and not unavailable(e):
                raise
            raise exception.StoreUnavailable(reason='cannot open %s: %s' % (
                self.path, e)) from e
        # The store's identity, recorded on the integration bridge by the
        # reconciler: a new or replaced store is then told from the one
        # that built the host's chains.
        new_id = str(uuid.uuid4())
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) "
                         "VALUES ('store_id', ?)", (new_id,))
        self.identity = self._db.execute(
            "SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
        #: True when this store was created by this open.
        self.is_new = self.identity == new_id
        # Reads have their own connection: under WAL they see the last
        # commit and never wait for a writer (a long sync, say).
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)

    def _check_sound(self):
        """Refuse a store SQLite finds damaged (quick_check is not ok)."""
        problems = [row[0] for row in
                    self._db.execute('PRAGMA quick_check(5)').fetchall()]
        if problems != ['ok']:
            raise sqlite3.DatabaseError(
                'damaged: %s. Restore it from a backup; moved aside, it '
                'is replaced by an empty store and the agent waits for '
                'the controller\'s sync_ports before it removes anything'
                % '; '.join(problems))

    def integrity_check(self):
        """SQLite's full integrity check: ``['ok']`` when sound."""
        return [r[0] for r in self._read('PRAGMA integrity_check')]

    def close(self):
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def _read(self, sql, args=()):
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def _binding(self, port_id, network_id, revision, data):
        """The stored row as a Binding, or as a Quarantined one.

        Stored bindings were validated on the way in; validating again on
        the way out keeps a hand-edited database from reaching the
        dataplane. A row today's rules refuse (after an upgrade tightened
        one) is quarantined: kept, reported, never plugged or collected.
        """
        try:
            return binding_mod.Binding.from_dict(json.loads(data),
                                                 self.default_mtu)
        except (exception.InvalidBinding, ValueError) as e:
            return Quarantined(port_id, network_id, revision, str(e))

    # -- reads ------------------------------------------------------------
    def get(self, port_id):
        """The Binding (or Quarantined row) of ``port_id``, or None."""
        rows = self._read(_SELECT + ' WHERE port_id = ?', (port_id,))
        return self._binding(*rows[0]) if rows else None

    def load(self):
        """``(bindings, quarantined)``: every stored row, sorted by id."""
        rows = [self._binding(*row)
                for row in self._read(_SELECT + ' ORDER BY port_id')]
        return ([r for r in rows if not isinstance(r, Quarantined)],
                [r for r in rows if isinstance(r, Quarantined)])

    def all(self):
        """Every stored binding that today's rules accept."""
        return self.load()[0]

    def port_ids(self):
        return [r[0] for r in self._read(
            'SELECT port_id FROM bindings ORDER BY port_id')]

    def vlans(self):
        """Return ``{network_id: vlan}``."""
        return dict(self._read('SELECT network_id, vlan FROM vlans'))

    def zones(self):
        """Return ``{port_id: conntrack zone}``."""
        return dict(self._read('SELECT port_id, zone FROM zones'))

    def groups(self):
        """``{id: SecurityGroup}`` of every stored group that validates."""
        groups = {}
        for group_id, data in self._read(
                'SELECT id, data FROM security_groups ORDER BY id'):
            try:
                groups[group_id] = secgroup_mod.SecurityGroup.from_dict(
                    json.loads(data))
            except (exception.InvalidSecurityGroup, ValueError) as e:
                # Treated as not held: ports that need it stay PENDING.
                LOG.error('Stored security group %s no longer validates: '
                          '%s', group_id, e)
        return groups

    def group(self, group_id):
        """The stored SecurityGroup ``group_id``, or None."""
        rows = self._read('SELECT data FROM security_groups WHERE id = ?',
                          (group_id,))
        if not rows:
            return None
        try:
            return secgroup_mod.SecurityGroup.from_dict(json.loads(rows[0][0]))
        except (exception.InvalidSecurityGroup, ValueError):
            return None

    def replace_groups(self, groups):
        """Make ``groups`` the complete set, atomically.

        Returns ``{CREATED|UPDATED|UNCHANGED|'removed': [ids]}``. A group
        older than the stored one raises StaleRevision, changing nothing.
        """
        wanted = {g.id for g in groups}
        result = {CREATED: [], UPDATED: [], UNCHANGED: [], 'removed': []}
        with self._lock, self._transaction():
            for (group_id,) in self._db.execute(
                    'SELECT id FROM security_groups').fetchall():
                if group_id not in wanted:
                    self._db.execute('DELETE FROM security_groups '
                                     'WHERE id = ?', (group_id,))
                    result['removed'].append(group_id)
            for group in groups:
                result[self._put_group(group)].append(group.id)
        return result

    def update_group(self, group):
        """Store a newer version of a held group.

        Returns CREATED/UPDATED/UNCHANGED, or None when the group is not
        held or ``group`` is older than the stored one (both ignored).
        """
        with self._lock, self._transaction():
            row = self._db.execute(
                'SELECT revision FROM security_groups WHERE id = ?',
                (group.id,)).fetchone()
            if row is None or group.revision < row[0]:
                return None
            return self._put_group(group)

    def _put_group(self, group):
        row = self._db.execute(
            'SELECT revision, data FROM security_groups WHERE id = ?',
            (group.id,)).fetchone()
        data = json.dumps(group.to_dict(), sort_keys=True)
        if row is not None:
            if group.revision < row[0]:
                raise exception.StaleRevision(
                    'Security group %s: revision %s is older than the '
                    'stored revision %s.' % (group.id, group.revision,
                                             row[0]))
            if data == row[1]:
                return UNCHANGED
        self._db.execute(
            'INSERT INTO security_groups (id, revision, data) '
            'VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET '
            'revision = excluded.revision, data = excluded.data',
            (group.id, group.revision, data))
        return UPDATED if row is not None else CREATED

    def vlan_for(self, network_id):
        rows = self._read('SELECT vlan FROM vlans WHERE network_id = ?',
                          (network_id,))
        return rows[0][0] if rows else None

    # -- writes -----------------------------------------------------------
    def put(self, binding, busy=()):
        """Store ``binding``; return (CREATED|UPDATED|UNCHANGED, vlan).

        An older revision raises StaleRevision. The same revision with the
        same content is UNCHANGED; anything else newer or equal is an
        update. Nothing is written when an error is raised.
        """
        with self._lock, self._transaction():
            result = self._put(binding, busy)
            self._check_vm_nics([binding])
            return result

    def put_many(self, bindings, busy=()):
        """Store several bindings atomically: all of them or none."""
        with self._lock, self._transaction():
            results = [self._put(b, busy) for b in bindings]
            self._check_vm_nics(bindings)
            return results

    def replace_all(self, bindings, busy=()):
        """Make ``bindings`` the complete set, atomically.

        Returns ``(results, removed)``: put results in the order given and
        the bindings that were removed.
        """
        wanted = {b.port_id for b in bindings}
        with self._lock, self._transaction():
            stored = [r[0] for r in self._db.execute(
                'SELECT port_id FROM bindings')]
            removed = [self._delete(pid) for pid in stored
                       if pid not in wanted]
            results = []
            for i, b in enumerate(bindings):
                if i == len(bindings) // 2:
                    faults.point('store.sync_mid_transaction')
                results.append(self._put(b, busy))
            self._check_vm_nics(bindings)
            return results, removed

    def _check_vm_nics(self, bindings):
        """Refuse two ports for one VM NIC, once all writes are done.

        Checked at the end of the transaction, so a set that moves a NIC
        from one port to another in one go is judged by its final state.
        """
        for b in bindings:
            other = self._db.execute(
                "SELECT port_id FROM bindings "
                "WHERE json_extract(data, '$.instance_uuid') = ? "
                "AND json_extract(data, '$.mac_address') = ? "
                "AND port_id != ?",
                (b.instance_uuid, b.mac_address, b.port_id)).fetchone()
            if other:
                raise exception.InvalidBinding(
                    field='mac_address',
                    reason='instance %s NIC %s is bound as port %s' % (
                        b.instance_uuid, b.mac_address, other[0]))

    def delete(self, port_id):
        """Remove a binding (kept as a tombstone); return it or None.

        A quarantined row is removed too, and returned as Quarantined.
        """
        with self._lock, self._transaction():
            return self._delete(port_id)

    def _put(self, binding, busy=()):
        db = self._db
        row = db.execute(_SELECT + ' WHERE port_id = ?',
                         (binding.port_id,)).fetchone()
        if row is not None:
            current = self._binding(*row)
            if binding.revision < current.revision:
                raise exception.StaleRevision(
                    port_id=binding.port_id, revision=binding.revision,
                    current=current.revision)
            if binding == current:
                return UNCHANGED, self._vlan(binding.network_id)
        clash = db.execute(
            'SELECT port_id FROM bindings WHERE name_key = ? '
            'AND port_id != ?', (binding_mod.name_key(binding.port_id),
                                 binding.port_id)).fetchone()
        if clash:
            raise exception.InvalidBinding(
                field='port_id',
                reason='its device names are those of port %s' % clash[0])
        db.execute('DELETE FROM unbinding WHERE port_id = ?',
                   (binding.port_id,))
        db.execute(
            'INSERT INTO bindings (port_id, name_key, network_id, revision, '
            'data) VALUES (?, ?, ?, ?, ?) ON CONFLICT (port_id) DO UPDATE '
            'SET network_id = excluded.network_id, '
            'revision = excluded.revision, data = excluded.data',
            (binding.port_id, binding_mod.name_key(binding.port_id),
             binding.network_id, binding.revision,
             json.dumps(binding.to_dict(), sort_keys=True)))
        if row is not None:
            # A port that moved network frees its old VLAN first.
            self._release_if_unused(current.network_id)
        self._zone(binding)
        vlan = self._allocate(binding.network_id, busy)
        return (UPDATED if row is not None else CREATED), vlan

    def _delete(self, port_id):
        """Move a binding to ``unbinding`` until forget() is called.

        The chain is removed after this commits; a crash in between
        leaves the tombstone, so the next start removes the chain instead
        of leaking it.
        """
        row = self._db.execute(_SELECT + ' WHERE port_id = ?',
                               (port_id,)).fetchone()
        if row is None:
            return None
        old = self._binding(*row)
        self._db.execute('DELETE FROM bindings WHERE port_id = ?',
                         (port_id,))
        self._db.execute('INSERT OR REPLACE INTO unbinding (port_id, data) '
                         'VALUES (?, ?)', (port_id, row[3]))
        self._db.execute('DELETE FROM reported WHERE port_id = ?',
                         (port_id,))
        self._db.execute('DELETE FROM zones WHERE port_id = ?', (port_id,))
        self._release_if_unused(old.network_id)
        return old

    def reported(self):
        """``{port_id: (status, reason)}`` last reported to the controller."""
        return {pid: (status, reason) for pid, status, reason in
                self._read('SELECT port_id, status, reason FROM reported')}

    def set_reported(self, statuses):
        """Remember ``{port_id: (status, reason)}`` as reported."""
        with self._lock, self._transaction():
            # Only for ports still bound: a report that raced an unbind
            # must not leave a row behind.
            self._db.executemany(
                'INSERT OR REPLACE INTO reported (port_id, status, reason) '
                'SELECT ?, ?, ? WHERE EXISTS '
                '(SELECT 1 FROM bindings WHERE port_id = ?)',
                [(pid, status, reason, pid)
                 for pid, (status, reason) in statuses.items()])

    def unbinding(self):
        """Port ids whose removal from the host is not confirmed yet."""
        return [r[0] for r in self._read(
            'SELECT port_id FROM unbinding ORDER BY port_id')]

    def forget(self, port_ids):
        """The host holds nothing more of these ports: drop tombstones."""
        with self._lock, self._transaction():
            self._db.executemany('DELETE FROM unbinding WHERE port_id = ?',
                                 [(pid,) for pid in port_ids])

    def _vlan(self, network_id):
        row = self._db.execute('SELECT vlan FROM vlans WHERE network_id = ?',
                               (network_id,)).fetchone()
        return row[0] if row else None

    def _allocate(self, network_id, busy=()):
        """The network's VLAN, or the lowest one free and not ``busy``.

        ``busy`` holds the tags OVS ports still carry: a VLAN released in
        the store while a stale port keeps it (its removal failed) must
        not go to another network, or that port joins another tenant's.
        """
        vlan = self._vlan(network_id)
        if vlan is not None:
            return vlan
        taken = {r[0] for r in self._db.execute('SELECT vlan FROM vlans')}
        taken.update(busy)
        vlan = MIN_VLAN
        while vlan in taken:
            vlan += 1
        if vlan > MAX_VLAN:
            raise exception.VlanPoolExhausted(network_id=network_id)
        self._db.execute('INSERT INTO vlans (network_id, vlan) VALUES (?, ?)',
                         (network_id, vlan))
        return vlan

    def _zone(self, binding):
        """Give a port with port security its own conntrack zone."""
        db = self._db
        if not binding.port_security_enabled:
            db.execute('DELETE FROM zones WHERE port_id = ?',
                       (binding.port_id,))
            return
        if db.execute('SELECT 1 FROM zones WHERE port_id = ?',
                      (binding.port_id,)).fetchone():
            return
        # The lowest free zone: a gap left by a removed port first.
        row = db.execute(
            'SELECT MIN(z.zone + 1) FROM (SELECT 0 AS zone UNION ALL '
            'SELECT zone FROM zones) z WHERE z.zone + 1 NOT IN '
            '(SELECT zone FROM zones)').fetchone()
        zone = row[0]
        if zone is None or zone > MAX_ZONE:
            raise exception.DataplaneError(reason='no free conntrack zone')
        db.execute('INSERT INTO zones (port_id, zone) VALUES (?, ?)',
                   (binding.port_id, zone))

    def _release_if_unused(self, network_id):
        in_use = self._db.execute(
            'SELECT 1 FROM bindings WHERE network_id = ? LIMIT 1',
            (network_id,)).fetchone()
        if not in_use:
            self._db.execute('DELETE FROM vlans WHERE network_id = ?',
                             (network_id,))

    def _transaction(self):
        return _Transaction(self._db)


def unavailable(error):
    """True for an SQLite error that says the store cannot be written.

    A full or read-only disk, an I/O error or a damaged file; not a
    constraint or a programming error, which are bugs.
    """
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, (sqlite3.IntegrityError, sqlite3.ProgrammingError,
                sqlite3.InterfaceError))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    A write the disk refuses (full, read-only, failing) rolls back and
    raises StoreUnavailable: the caller changes nothing on the host.
    """

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute('BEGIN IMMEDIATE')
        except sqlite3.DatabaseError as e:
            if unavailable(e):
                raise exception.StoreUnavailable(reason=str(e)) from e
            raise

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute('COMMIT')
                return False
            except sqlite3.DatabaseError as e:
                exc = e
        self._rollback()
        if unavailable(exc):
            LOG.error('The store cannot record a change: %s', exc)
            raise exception.StoreUnavailable(reason=str(exc)) from exc
        if exc_type is None:
            raise exc
        return False

    def _rollback(self):
        if not self.db.in_transaction:
            return  # SQLite already rolled back (a full disk, say)
        try:
            self.db.execute('ROLLBACK')
        except sqlite3.DatabaseError as e:
            LOG.error('Could not roll back: %s', e)
