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

"""Real libvirt domains, with their own names, for functional tests.

:class:`DomainFixture` defines (and by default starts) a domain on
``qemu:///system`` named ``vifagent-test-<random>``, always emulated
(``<domain type='qemu'>``): a Linux guest under KVM may hang at boot on
test hosts, and TCG is quick enough for what these domains do.

Two kinds of domain:

* no ``guest``: no disk and no OS, 32 MiB. Enough to make libvirt create
  taps (``vnetN``, or the ``target`` asked for) and plug them where the
  interface says. Nothing runs inside, so nothing acknowledges a PCI
  hot-unplug: :meth:`DomainFixture.detach_interface` needs a guest.
* ``guest={'ip': '10.0.0.1/24', 'peer': '10.0.0.2'}``: boots the tiny
  kernel and initramfs from tools/build-guest.sh (128 MiB). The guest sets
  up eth0 (its first interface), prints ``VIFAGENT-GUEST-READY`` and then
  pings the peer for ever, printing ``VIFAGENT-PING-OK <peer>`` or
  ``VIFAGENT-PING-FAIL <peer>`` about once a second on its serial console,
  which goes to a file: read it with :meth:`DomainFixture.console_text` or
  :meth:`DomainFixture.wait_console`. Booting to the first ping takes a few
  seconds. ``guest={}`` boots the same guest without an address, for
  tests that only need a guest OS (to acknowledge hot-unplug).

Cleanups destroy and undefine the domain even when the test fails, and do
not mind it being gone already; they only ever touch the domain the
fixture defined (looked up by its UUID, and its name must match). The
serial console and libvirt's log of the domain are attached to the test
as details and then removed.
"""

import fcntl
import os
import signal
import subprocess
import tempfile
import time
import uuid as uuid_mod
from xml.etree import ElementTree

import fixtures
from testtools import content
from testtools import content_type

from tests.functional import base

try:
    import libvirt
except ImportError:  # only functional tests use this module
    libvirt = None

URI = 'qemu:///system'
NAME_PREFIX = 'vifagent-test-'
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD_GUEST = os.path.join(TOP, 'tools', 'build-guest.sh')
DEFAULT_GUEST_DIR = '/var/cache/vifagent/guest'
# Serial console files go to libvirt's own log directory. libvirt 9 opens
# them itself and hands qemu the descriptor; older releases relabel the
# file and let qemu (an unprivileged user) open it, which a private
# temporary directory would defeat.
LOG_DIR = '/var/log/libvirt/qemu'

_image = None

LOCK_PATH = os.path.join(tempfile.gettempdir(), 'vifagent-test-libvirtd.lock')
# Set while this process holds the lock exclusively.
_exclusive = False


class _LibvirtLock(fixtures.Fixture):
    """A lock on libvirtd's availability, shared by tests in parallel.

    Tests that use libvirtd take it shared; the test that restarts
    libvirtd takes it exclusively, so it waits for the others and they
    for it. Inside an exclusive holder, shared requests are no-ops.
    """

    mode = fcntl.LOCK_SH

    def _setUp(self):
        global _exclusive
        if _exclusive:
            return
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, self.mode)
        self.addCleanup(fcntl.flock, fd, fcntl.LOCK_UN)
        if self.mode == fcntl.LOCK_EX:
            _exclusive = True
            self.addCleanup(globals().__setitem__, '_exclusive', False)
        # A previous test may have stopped libvirtd and failed before it
        # started it again.
        start_libvirtd()


class LibvirtInUse(_LibvirtLock):
    """Held while a test uses libvirtd."""


class LibvirtExclusive(_LibvirtLock):
    """Held by a test that stops libvirtd."""

    mode = fcntl.LOCK_EX


def libvirtd_pid():
    out = subprocess.run(['pgrep', '-x', 'libvirtd'], capture_output=True,
                         text=True).stdout.split()
    return int(out[0]) if out else None


def stop_libvirtd(timeout=30):
    """Stop libvirtd (its domains keep running); wait until it is gone."""
    pid = libvirtd_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while libvirtd_pid() == pid:
        if time.monotonic() > deadline:
            raise AssertionError('libvirtd did not stop')
        time.sleep(0.1)


def start_libvirtd():
    """Start libvirtd unless it runs; wait until it answers."""
    subprocess.run([os.path.join(TOP, 'tools', 'start-libvirt.sh')],
                   check=True, capture_output=True)


class GuestImageError(Exception):
    """tools/build-guest.sh could not provide the guest kernel/initrd."""


def guest_image():
    """Paths (vmlinuz, initrd) of the test guest, built when needed.

    Runs tools/build-guest.sh once per process, into $VIFAGENT_GUEST_DIR
    or /var/cache/vifagent/guest. The script returns at once when the
    files are there and current, and builds them (as root, from the Debian
    cloud kernel and busybox) when they are missing or were made by an
    older version of the script.
    """
    global _image
    if _image is None:
        directory = os.environ.get('VIFAGENT_GUEST_DIR', DEFAULT_GUEST_DIR)
        try:
            proc = subprocess.run([BUILD_GUEST, directory],
                                  capture_output=True, text=True)
        except OSError as e:
            raise GuestImageError('cannot run %s: %s' % (BUILD_GUEST, e))
        paths = (os.path.join(directory, 'vmlinuz'),
                 os.path.join(directory, 'initrd.img'))
        if proc.returncode != 0 or not all(map(os.path.isfile, paths)):
            raise GuestImageError(
                '%s %s failed (exit %d), no guest image:\n%s' % (
                    BUILD_GUEST, directory, proc.returncode,
                    proc.stderr.strip()[-2000:]))
        _image = paths
    return _image


def interface_xml(spec):
    """The ``<interface>`` element for one interface spec (a dict).

    ``type`` is ``ethernet`` (a bare tap, the default) or ``bridge``
    (``bridge`` names the Linux bridge libvirt plugs the tap into).
    ``target`` names the tap; without it libvirt picks ``vnetN``.
    ``mtu`` is optional. The NIC is virtio, with its boot ROM off so a
    domain without an OS does not send PXE traffic.
    """
    kind = spec.get('type', 'ethernet')
    iface = ElementTree.Element('interface', type=kind)
    ElementTree.SubElement(iface, 'mac', address=spec['mac'])
    if kind == 'bridge':
        ElementTree.SubElement(iface, 'source', bridge=spec['bridge'])
    elif kind != 'ethernet':
        raise ValueError('interface type %r: ethernet or bridge' % kind)
    if spec.get('target'):
        ElementTree.SubElement(iface, 'target', dev=spec['target'])
    ElementTree.SubElement(iface, 'model', type='virtio')
    if spec.get('mtu'):
        ElementTree.SubElement(iface, 'mtu', size=str(spec['mtu']))
    ElementTree.SubElement(iface, 'rom', enabled='no')
    return iface


def _macs_and_elements(xml):
    """(mac, <interface> element) for each interface in a domain XML."""
    root = ElementTree.fromstring(xml)
    for iface in root.findall('./devices/interface'):
        mac = iface.find('mac')
        if mac is not None:
            yield mac.get('address').lower(), iface


class DomainFixture(fixtures.Fixture):
    """A libvirt domain of the test's own, removed at cleanup.

    :param interfaces: list of dicts, see :func:`interface_xml`; ``mac``
        is made up when missing (the specs are kept, with their MACs, in
        ``self.interfaces``).
    :param uuid: the domain UUID, random by default.
    :param start: start the domain in setUp (else call :meth:`start`).
    :param guest: ``{'ip': CIDR, 'peer': IP, 'mtu': int, 'cmdline': str}``
        (all optional, ``{}`` too) to boot the test guest; None for a
        domain with no disk and no OS.
    :param memory: MiB; 128 for a guest, 32 otherwise.
    """

    def __init__(self, interfaces=(), uuid=None, start=True, guest=None,
                 memory=None):
        super().__init__()
        self.interfaces = [self._complete(spec) for spec in interfaces]
        self.uuid = str(uuid or uuid_mod.uuid4())
        self.autostart = start
        self.guest = guest
        self.memory = memory or (32 if guest is None else 128)
        self.name = NAME_PREFIX + uuid_mod.uuid4().hex[:8]
        self.console_path = (
            None if guest is None
            else os.path.join(LOG_DIR, self.name + '-console.log'))
        self.log_path = os.path.join(LOG_DIR, self.name + '.log')
        self.started_at = None
        self.conn = None
        self._saved = {}

    @staticmethod
    def _complete(spec):
        spec = dict(spec)
        spec['mac'] = (spec.get('mac') or base.random_mac()).lower()
        return spec

    def _setUp(self):
        if libvirt is None:
            raise RuntimeError('DomainFixture needs libvirt-python')
        self.useFixture(LibvirtInUse())
        self.conn = libvirt.open(URI)
        self.addCleanup(self._close)
        self.addDetail('libvirt-log ' + self.name, self._lazy(self.log_path))
        if self.console_path:
            self.addDetail('console ' + self.name,
                           self._lazy(self.console_path))
        xml = ElementTree.tostring(self._domain_xml(), encoding='unicode')
        self.conn.defineXML(xml)
        # From here on the domain exists: remove it whatever happens next.
        self.addCleanup(self._remove)
        if self.autostart:
            self.start()

    # The domain XML

    def _domain_xml(self):
        sub = ElementTree.SubElement
        domain = ElementTree.Element('domain', type='qemu')
        sub(domain, 'name').text = self.name
        sub(domain, 'uuid').text = self.uuid
        sub(domain, 'memory', unit='MiB').text = str(self.memory)
        sub(domain, 'vcpu').text = '1'
        os_ = sub(domain, 'os')
        sub(os_, 'type', arch='x86_64').text = 'hvm'
        if self.guest is not None:
            kernel, initrd = guest_image()
            sub(os_, 'kernel').text = kernel
            sub(os_, 'initrd').text = initrd
            sub(os_, 'cmdline').text = self._cmdline()
        features = sub(domain, 'features')
        # ACPI carries PCI hot-plug on the default (i440fx) machine.
        sub(features, 'acpi')
        sub(features, 'apic')
        sub(domain, 'on_poweroff').text = 'destroy'
        sub(domain, 'on_crash').text = 'destroy'
        devices = sub(domain, 'devices')
        for spec in self.interfaces:
            devices.append(interface_xml(spec))
        if self.console_path:
            serial = sub(devices, 'serial', type='file')
            sub(serial, 'source', path=self.console_path)
            sub(serial, 'target', port='0')
        sub(devices, 'controller', type='usb', model='none')
        sub(devices, 'memballoon', model='none')
        return domain

    def _cmdline(self):
        words = ['console=ttyS0']
        if self.guest.get('ip'):
            words.append('vifagent.ip=%s' % self.guest['ip'])
        if self.guest.get('peer'):
            words.append('vifagent.peer=%s' % self.guest['peer'])
        if self.guest.get('mtu'):
            words.append('vifagent.mtu=%s' % self.guest['mtu'])
        if self.guest.get('cmdline'):
            words.append(self.guest['cmdline'])
        return ' '.join(words)

    # Life cycle

    def _domain(self):
        """Our virDomain, or None when it is gone (or not ours)."""
        # A listing rather than lookupByUUIDString: a failed lookup makes
        # libvirt-python print an error on stderr, and here being gone is
        # normal.
        try:
            domains = self.conn.listAllDomains()
        except libvirt.libvirtError:
            if self._alive():
                raise
            # libvirtd went away and came back: a new connection.
            self.conn = libvirt.open(URI)
            domains = self.conn.listAllDomains()
        for dom in domains:
            if dom.UUIDString() == self.uuid and dom.name() == self.name:
                return dom
        return None

    @property
    def domain(self):
        """The virDomain; AssertionError when it no longer exists."""
        dom = self._domain()
        if dom is None:
            raise AssertionError('domain %s is gone' % self.name)
        return dom

    def start(self):
        """Start the (defined, stopped) domain."""
        self.domain.create()
        self.started_at = time.monotonic()

    def destroy(self):
        """Stop the domain at once; fine when it is not running or gone."""
        for attempt in range(3):
            dom = self._domain()
            if dom is None or not dom.isActive():
                return
            try:
                dom.destroy()
                return
            except libvirt.libvirtError as e:
                code = e.get_error_code()
                if code in (libvirt.VIR_ERR_NO_DOMAIN,
                            libvirt.VIR_ERR_OPERATION_INVALID):
                    return
                # qemu may take a moment to die under load.
                if attempt == 2 or code != libvirt.VIR_ERR_SYSTEM_ERROR:
                    raise
                time.sleep(1)

    def qemu_pid(self):
        """The pid of the domain's QEMU, read without libvirtd."""
        try:
            with open('/run/libvirt/qemu/%s.pid' % self.name) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            out = subprocess.run(['pgrep', '-f', 'guest=%s,' % self.name],
                                 capture_output=True, text=True).stdout
            return int(out.split()[0]) if out.split() else None

    def kill_qemu(self, timeout=30):
        """SIGKILL the domain's QEMU (works while libvirtd is away)."""
        pid = self.qemu_pid()
        if pid is None:
            raise AssertionError('%s has no QEMU process' % self.name)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while os.path.exists('/proc/%d' % pid):
            try:
                with open('/proc/%d/stat' % pid) as f:
                    if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                        return    # a zombie until libvirtd reaps it
            except OSError:
                return
            if time.monotonic() > deadline:
                raise AssertionError('QEMU %d did not die' % pid)
            time.sleep(0.05)

    def undefine(self):
        """Remove the definition; fine when it is gone already."""
        dom = self._domain()
        if dom is None:
            return
        try:
            dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise

    def _alive(self):
        try:
            return self.conn.isAlive()
        except libvirt.libvirtError:
            return False

    def _remove(self):
        try:
            self.destroy()
            self.undefine()
        finally:
            for path in (self.console_path, self.log_path):
                if path:
                    self._saved[path] = self._read(path)
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass

    def _close(self):
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    # Files: console and libvirt log

    def _read(self, path):
        if path in self._saved:
            return self._saved[path]
        try:
            with open(path, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            return b''

    def _lazy(self, path):
        """A test detail that reads the file when the result is written."""
        return content.Content(content_type.UTF8_TEXT,
                               lambda: [self._read(path)])

    def console_text(self):
        """Everything the guest wrote to its serial console so far."""
        if not self.console_path:
            raise AssertionError('%s has no guest, so no console'
                                 % self.name)
        return self._read(self.console_path).decode('utf-8', 'replace')

    def wait_console(self, marker, timeout=120, after=0):
        """Wait until ``marker`` shows on the console; return the text.

        Only text from offset ``after`` on counts (pass the length of an
        earlier console_text() to wait for something new). On timeout,
        AssertionError with the end of the console.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()
            if marker in text[after:]:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    '%r not on the console of %s after %ss; it ends:\n%s'
                    % (marker, self.name, timeout, text[-2000:]))
            time.sleep(0.2)

    # Interfaces

    def taps(self):
        """{mac: tap device} from the live XML (None: no tap yet)."""
        result = {}
        for mac, iface in _macs_and_elements(self.domain.XMLDesc(0)):
            target = iface.find('target')
            result[mac] = target.get('dev') if target is not None else None
        return result

    def attach_interface(self, spec):
        """Hot-plug an interface (a spec dict); return its tap name.

        It goes into the persistent definition as well, as Nova does, so
        a later restart keeps it. On a stopped domain it is only defined,
        and None is returned.
        """
        spec = self._complete(spec)
        dom = self.domain
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        xml = ElementTree.tostring(interface_xml(spec), encoding='unicode')
        dom.attachDeviceFlags(xml, flags)
        self.interfaces.append(spec)
        return self.taps().get(spec['mac'])

    def detach_interface(self, mac, wait=True, timeout=60):
        """Hot-unplug the interface with this MAC (live and persistent).

        Unplugging is asynchronous: qemu only removes the NIC once the
        guest OS acknowledges it, so on a running guest this first waits
        for the guest to be up. With ``wait``, return once the NIC is
        gone from the live XML (AssertionError after ``timeout`` seconds).
        A domain without a guest never acknowledges, so waiting on one is
        refused up front; ``wait=False`` just sends the request (libvirt
        itself waits up to 5 s for it).
        """
        mac = mac.lower()
        dom = self.domain
        active = dom.isActive()
        if active and self.guest is None and wait:
            raise AssertionError(
                'hot-unplug from %s cannot complete: it has no guest OS to '
                'acknowledge it (use guest={}, or wait=False)' % self.name)
        if active and self.guest is not None:
            self.wait_console('VIFAGENT-GUEST-READY', timeout=timeout)
        flags = 0
        live = dict(_macs_and_elements(dom.XMLDesc(0))) if active else {}
        persistent = dict(_macs_and_elements(
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
        if mac in live:
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        if mac in persistent:
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if not flags:
            raise AssertionError('%s has no interface %s' % (self.name, mac))
        element = live.get(mac, persistent.get(mac))
        dom.detachDeviceFlags(
            ElementTree.tostring(element, encoding='unicode'), flags)
        self.interfaces = [s for s in self.interfaces if s['mac'] != mac]
        if not (wait and mac in live):
            return
        deadline = time.monotonic() + timeout
        while mac in self.taps():
            if time.monotonic() > deadline:
                raise AssertionError('%s still has %s after %ss'
                                     % (self.name, mac, timeout))
            time.sleep(0.2)
