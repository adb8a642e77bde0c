"""A byte-counting TCP proxy between one meter and tbsim: the wire cost as the socket sees it.

Counts every byte each way (MQTT, or TLS records carrying it) and, for TLS, reads the protocol
version and cipher suite the server chose from its ServerHello (the only part sent in clear
that says so). snapshot() is taken by the bench at quiet moments, between messages.
"""

import socket
import struct
import threading

_TLS_VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def server_hello(data):
    """(version name, cipher suite id) from the first bytes the server sent, or None."""
    # record: type 22, version, length; handshake: type 2 (ServerHello), length(3), version,
    # random(32), session id, cipher suite, compression, extensions (43 = supported_versions).
    if len(data) < 5 + 4 + 2 + 32 + 1 or data[0] != 22 or data[5] != 2:
        return None
    i = 5 + 4
    version = struct.unpack_from("!H", data, i)[0]
    i += 2 + 32
    i += 1 + data[i]
    suite = struct.unpack_from("!H", data, i)[0]
    i += 2 + 1
    if i + 2 <= len(data):
        end = min(len(data), i + 2 + struct.unpack_from("!H", data, i)[0])
        i += 2
        while i + 4 <= end:
            ext, size = struct.unpack_from("!HH", data, i)
            if ext == 43 and size == 2:
                version = struct.unpack_from("!H", data, i + 4)[0]
            i += 4 + size
    return _TLS_VERSIONS.get(version, hex(version)), suite


class CountingProxy:
    def __init__(self, target_port, host="127.0.0.1"):
        self.target = (host, target_port)
        self.up = 0  # meter -> server
        self.down = 0  # server -> meter
        self.connections = 0
        self.tls = None  # (version, cipher suite) of the last TLS connection
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self):
        with self._lock:
            return self.up + self.down

    def close(self):
        self._closed = True
        self._sock.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src, dst, up):
        first = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if first and not up:
                    hello = server_hello(data)
                    if hello:
                        self.tls = hello
                first = False
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
