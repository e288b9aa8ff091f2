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

"""A socket relay a test can cut and restore.

Putting one between an agent and a shared service (ovsdb-server,
libvirtd, RabbitMQ) takes that service away from this agent only, never
from other tests on the host.
"""

import contextlib
import os
import socket
import threading

from tests.functional import netns as netns_mod


class SocketProxy:
    """Relays connections to ``target``: ``(host, port)`` or a unix path.

    A TCP proxy listens on 127.0.0.1 (``port``); a unix one on ``path``.
    ``cut()`` drops the listener and every relayed connection;
    ``restore()`` listens again at the same address. ``hold()`` stalls
    every relayed connection without closing it (a peer that went
    silent); ``release()`` delivers what was held and relays again.

    With ``netns`` the TCP listener is on that network namespace's
    loopback, while the relay reaches ``target`` from the host's: a
    process in the namespace then reaches a host service through it.
    """

    def __init__(self, target, path=None, netns=None):
        self.target = target
        self.netns = netns
        self.unix = isinstance(target, str)
        self.path = path
        self.port = None
        self._listener = None
        self._conns = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    def restore(self):
        if self.unix:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
        else:
            with (netns_mod.inside(self.netns) if self.netns
                  else contextlib.nullcontext()):
                listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(('127.0.0.1', self.port or 0))
            self.port = listener.getsockname()[1]
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,),
                         daemon=True).start()

    def _connect(self):
        if self.unix:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            return upstream
        return socket.create_connection(self.target)

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                # The service is away: the client sees its connection
                # closed, as it would without the relay.
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # Held: the bytes wait here, in order, until release().
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hold(self):
        """Stop relaying in both directions; connections stay open.

        The peers see a network that went quiet: requests sent meanwhile
        are not answered until release(). cut() ends a hold.
        """
        self._flowing.clear()

    def release(self):
        """Deliver what was held and relay again; idempotent."""
        self._flowing.set()

    def cut(self):
        """Drop the listener and every relayed connection; idempotent."""
        if self._listener is None:
            return
        # shutdown() wakes the thread blocked in accept(); close() alone
        # would leave the socket listening until that call returns.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._listener = None
        if self.unix:
            os.unlink(self.path)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        # Threads holding bytes for a dropped connection fail to send and
        # end; connections made after a restore() are relayed at once.
        self._flowing.set()
