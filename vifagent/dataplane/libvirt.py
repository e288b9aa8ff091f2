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

"""libvirt side of the dataplane: which tap belongs to which port.

A binding names a domain (instance_uuid) and a guest MAC. The tap is the
``<target dev>`` of the domain's ``<interface>`` whose ``<mac address>``
is that MAC. The tap's own link-layer address is never used: libvirt sets
its first octet to 0xFE, so it never equals the guest MAC.
"""

import dataclasses
import threading
import time
from xml.etree import ElementTree

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

_TAP_TYPES = ('ethernet', 'bridge')


@dataclasses.dataclass(frozen=True)
class Interface:
    """One ``<interface>`` of a live domain."""

    mac: str
    tap: str = None
    type: str = None
    bridge: str = None


def interfaces_from_xml(xml):
    """Return ``{guest mac: Interface}`` of a domain's XML description.

    Only interface types that give the host a tap (``ethernet`` and
    ``bridge``) are returned; an interface without a ``<target dev>``
    (a domain that is defined but not running) has ``tap`` None.
    """
    root = ElementTree.fromstring(xml)
    found = {}
    for node in root.findall('./devices/interface'):
        kind = node.get('type')
        mac = node.find('mac')
        if kind not in _TAP_TYPES or mac is None or not mac.get('address'):
            continue
        target = node.find('target')
        source = node.find('source')
        address = mac.get('address').lower()
        found[address] = Interface(
            mac=address,
            tap=target.get('dev') if target is not None else None,
            type=kind,
            bridge=source.get('bridge') if source is not None else None)
    return found


# virDomainState values, by number, so this module needs no libvirt import.
_STATES = ('no state', 'running', 'blocked', 'paused', 'shutting down',
           'shut off', 'crashed', 'suspended')
#: States in which the guest runs and its links can carry traffic.
_RUNNING = ('running', 'blocked')
#: States in which QEMU is gone and with it every tap.
_INACTIVE = ('shut off', 'crashed', 'no state')


@dataclasses.dataclass(frozen=True)
class Domain:
    """What the agent knows of one libvirt domain."""

    uuid: str
    name: str
    state: str
    interfaces: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_libvirt(cls, uuid, name, state, xml):
        state = _STATES[state] if 0 <= state < len(_STATES) else 'no state'
        return cls(uuid=uuid.lower(), name=name, state=state,
                   interfaces=interfaces_from_xml(xml))


@dataclasses.dataclass(frozen=True)
class Tap:
    """The tap a binding resolves to, and why the port is not up if so.

    ``device`` is the tap to wire into qbr (None while there is none);
    ``bridge`` the bridge libvirt itself enslaves it to (type='bridge');
    ``down`` the reason the port must be DOWN even when wired, or None.
    """

    device: str = None
    bridge: str = None
    down: str = None


def resolve(domain, mac, connected=True):
    """Which tap a binding for guest ``mac`` on ``domain`` has.

    ``domain`` is a Domain or None when libvirt knows no such domain.
    The tap of a defined but inactive domain is never used, even if its
    XML names one: a device by that name may be left over or another's.
    """
    if domain is None:
        return Tap(down='libvirt is not connected' if not connected
                   else 'domain is not defined')
    if domain.state in _INACTIVE:
        return Tap(down='domain is %s' % domain.state)
    iface = domain.interfaces.get(mac.lower())
    if iface is None:
        return Tap(down='domain has no interface with MAC %s' % mac)
    if iface.tap is None:
        return Tap(down='libvirt gave interface %s no tap' % mac)
    return Tap(device=iface.tap,
               bridge=iface.bridge if iface.type == 'bridge' else None,
               down=None if domain.state in _RUNNING
               else 'domain is %s' % domain.state)


_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop():
    """Run libvirt's default event loop on a thread, once per process.

    It must be registered before the first connection is opened; events,
    keepalives and close callbacks are all dispatched from it.
    """
    import libvirt
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop():
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:
                    LOG.exception('libvirt event loop iteration failed')
                    time.sleep(0.1)

        threading.Thread(target=loop, name='libvirt-events',
                         daemon=True).start()
        _event_loop_started = True


class Watcher:
    """One long-lived libvirt connection and a cache of its domains.

    The cache is what plugging reads, so a bind costs no libvirt round
    trip. It is loaded whole on every (re)connection, and kept current by
    domain events: each event only queues its domain, and this watcher's
    own thread re-reads that domain and calls ``on_change(uuids)``. That
    thread also reloads the whole cache every ``reload_interval`` seconds,
    which heals whatever a lost event or an unseen bug left behind. After
    a reconnection, when events may have been missed, it calls
    ``on_connect()``. Only that thread reads libvirt once started.
    """

    def __init__(self, uri, on_change, on_connect, backoff_cap=30.0,
                 keepalive_interval=5, reload_interval=60):
        self.uri = uri
        self._on_change = on_change
        self._on_connect = on_connect
        self._backoff_cap = backoff_cap
        self._keepalive = keepalive_interval
        self._reload_interval = reload_interval
        self._next_reload = None
        self._libvirt = None
        self._conn = None
        self._lost = False
        self._domains = {}
        self._pending = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self.connects = 0
        self.events = 0

    # -- public ---------------------------------------------------------------
    def start(self):
        """Connect once (so a first pass sees the domains), then watch."""
        import libvirt
        self._libvirt = libvirt
        # libvirt prints every error to stderr by default; they are
        # handled and logged here instead.
        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        start_event_loop()
        try:
            self._connect()
        except libvirt.libvirtError as e:
            LOG.warning('libvirt at %s is not reachable (%s); retrying in '
                        'the background', self.uri, _message(e))
        self._thread = threading.Thread(target=self._run, name='libvirt',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._disconnect()

    def connected(self):
        return self._conn is not None and not self._lost

    def to_dict(self):
        """Connection facts for get_agent_state."""
        return {'uri': self.uri, 'connected': self.connected(),
                'domains': len(self._domains), 'connects': self.connects,
                'events': self.events}

    def resolve(self, uuid, mac):
        """The Tap of guest ``mac`` on domain ``uuid``, from the cache."""
        return resolve(self._domains.get(uuid), mac, self.connected())

    # -- connection -----------------------------------------------------------
    def _connect(self):
        libvirt = self._libvirt
        conn = libvirt.open(self.uri)
        try:
            conn.registerCloseCallback(self._closed, None)
            conn.setKeepAlive(self._keepalive, 3)
            # Events first, then the listing: a change in between is then
            # seen twice, never missed.
            for name in ('LIFECYCLE', 'DEVICE_ADDED', 'DEVICE_REMOVED'):
                event = getattr(libvirt, 'VIR_DOMAIN_EVENT_ID_' + name, None)
                if event is not None:
                    conn.domainEventRegisterAny(None, event, self._event,
                                                None)
            self._lost = False
            self._conn = conn
            self._load_all(conn)
        except libvirt.libvirtError:
            self._conn = None
            _close(conn)
            raise
        self.connects += 1
        LOG.info('Connected to libvirt at %s: %d domains', self.uri,
                 len(self._domains))

    def _disconnect(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unregisterCloseCallback()
            except Exception:  # noqa: S110 (the connection may be dead)
                pass
            _close(conn)

    def _closed(self, conn, reason, opaque):
        # From the event loop thread: only flag it.
        LOG.warning('libvirt connection to %s closed (reason %s)',
                    self.uri, reason)
        self._lost = True
        self._wake.set()

    def _failed(self, conn, error):
        """A call failed: is it the connection, or just this call?"""
        try:
            alive = conn.isAlive()
        except self._libvirt.libvirtError:
            alive = False
        if not alive:
            LOG.warning('libvirt connection to %s lost: %s', self.uri,
                        _message(error))
            self._lost = True
            self._wake.set()
        else:
            LOG.warning('libvirt call failed: %s', _message(error))

    # -- events ---------------------------------------------------------------
    def _event(self, conn, dom, *args):
        # From the event loop thread: queue the domain, never call libvirt.
        try:
            uuid = dom.UUIDString()
        except Exception:
            self._lost = True
            self._wake.set()
            return
        with self._lock:
            self._pending.add(uuid)
            self.events += 1
        self._wake.set()

    def _run(self):
        delay = 0.5
        while not self._stopping.is_set():
            if self._conn is None or self._lost:
                self._disconnect()
                try:
                    self._connect()
                except self._libvirt.libvirtError as e:
                    LOG.warning('Cannot connect to libvirt at %s (%s); '
                                'next attempt in %.1f s', self.uri,
                                _message(e), delay)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, self._backoff_cap)
                    continue
                delay = 0.5
                self._call(self._on_connect)
                continue
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._lost:
                changed = self._refresh(self._conn)
                if changed:
                    self._call(self._on_change, changed)

    def _refresh(self, conn):
        """Re-read the queued domains, or all when a reload is due.

        Returns the uuids whose record changed. Domains not read because
        a call failed stay queued.
        """
        with self._lock:
            pending, self._pending = self._pending, set()
        changed = set()
        try:
            if time.monotonic() >= self._next_reload:
                changed = self._load_all(conn)
                pending.clear()
            for uuid in list(pending):
                if self._load_one(conn, uuid):
                    changed.add(uuid)
                pending.discard(uuid)
        except self._libvirt.libvirtError as e:
            self._failed(conn, e)
            with self._lock:
                self._pending |= pending
        return changed

    @staticmethod
    def _call(func, *args):
        try:
            func(*args)
        except Exception:
            LOG.exception('libvirt watcher callback failed')

    # -- cache ----------------------------------------------------------------
    def _read(self, dom):
        state = dom.state()[0]
        return Domain.from_libvirt(dom.UUIDString(), dom.name(), state,
                                   dom.XMLDesc(0))

    def _load_all(self, conn):
        """Re-read every domain; return the uuids whose record changed."""
        libvirt = self._libvirt
        found = {}
        for dom in conn.listAllDomains(0):
            try:
                domain = self._read(dom)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                continue    # undefined while being listed
            found[domain.uuid] = domain
        self._next_reload = time.monotonic() + self._reload_interval
        with self._lock:
            old, self._domains = self._domains, found
        return {uuid for uuid in set(old) | set(found)
                if old.get(uuid) != found.get(uuid)}

    def _load_one(self, conn, uuid):
        """Re-read one domain into the cache; whether its record changed."""
        libvirt = self._libvirt
        uuid = uuid.lower()
        try:
            domain = self._read(conn.lookupByUUIDString(uuid))
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            domain = None
        with self._lock:
            old = self._domains.get(uuid)
            if domain is None:
                self._domains.pop(uuid, None)
            else:
                self._domains[uuid] = domain
        return old != domain


def _message(error):
    try:
        return error.get_error_message()
    except Exception:
        return str(error)


def _close(conn):
    try:
        conn.close()
    except Exception:  # noqa: S110 (closing a dead connection)
        pass
