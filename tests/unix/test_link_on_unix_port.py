"""firmware.link on the real MicroPython runtime: an idle session's poll() allocates nothing
(it runs every 50 ms of the meter's life)."""

import socket
import threading


def _server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.recv(4096)  # the CONNECT
        conn.sendall(b"\x20\x02\x00\x00")
        conn.settimeout(60)
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_poll_on_an_idle_session_allocates_nothing(upy):
    port = _server()
    r = upy("tests/unix/link_poll_alloc.py", str(port), paths=("lib",), heap="256K")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CONNECTED True" in r.stdout, r.stdout
    assert "POLL ALLOC 0" in r.stdout, r.stdout
