"""The publishing step's and the 2 s cycle's garbage on the real MicroPython runtime (issue
16): the reading pipeline as firmware/wiring.py builds it, the Unix HAL with the simulator's
network and button files, the real link and umqtt.simple, a server that acknowledges every
PUBLISH. Counted with gc.mem_alloc() and the collector off, in one run: a count of bytes, not
a time. make bench reports the whole step and cycle, supervisor included
(docs/benchmarks.md)."""

import os
import re
import socket
import threading


def _puback_server():
    # CONNACK, then a PUBACK for every QoS 1 PUBLISH (MQTT 3.1.1 §3.3, §3.4).
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def read(conn, n):
        out = b""
        while len(out) < n:
            got = conn.recv(n - len(out))
            if not got:
                raise OSError("closed")
            out += got
        return out

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(120)
        try:
            while True:
                first = read(conn, 1)[0]
                n, shift = 0, 0
                while True:
                    b = read(conn, 1)[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = read(conn, n)
                if first == 0x10:
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                elif first & 0xF0 == 0x30 and first & 0x06:
                    t = body[0] << 8 | body[1]
                    conn.sendall(b"\x40\x02" + body[2 + t:4 + t])  # PUBACK, its packet id
        except OSError:
            pass
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


def _control_files(tmp):
    # What lab/meterhost.py gives a virtual meter: the network file, the button's (absent: not
    # held) and the control FIFO, held open by the harness so that it never sees an end.
    net, button, control = (os.path.join(tmp, n) for n in ("net", "button", "control"))
    with open(net, "w") as f:
        f.write("up")
    os.mkfifo(control)
    fd = os.open(control, os.O_RDWR | os.O_NONBLOCK)
    return fd, {"METER_NET": net, "METER_BUTTON": button, "METER_CONTROL": control}


def test_a_publishing_step_allocates_at_most_512_bytes_and_an_idle_step_nothing(upy, tmp_path):
    fd, env = _control_files(str(tmp_path))
    try:
        r = upy("tests/unix/publish_step_alloc.py", str(_puback_server()), paths=("lib",),
                heap="256K", env=env, timeout=180)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"PUBLISH ALLOC (\d+) (\d+) (\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    median, largest, steps = map(int, m.groups())
    # The goal for make bench's median is 512 bytes. On this path (no supervisor, no
    # HAL files) a step makes the reading list and its tuple, the payload view and the power
    # float: about 384. Before issue 16's cuts it was over 1000 (the timestamp and index read
    # back as big ints, a bytes object per number, the backlog's generator).
    assert median <= 512 and largest <= 640, r.stdout
    m = re.search(r"IDLE ALLOC (\d+) (\d+)", r.stdout)
    assert m and int(m.group(2)) >= 100, r.stdout
    assert int(m.group(1)) == 0, "steps with nothing to do allocate: " + r.stdout
    # The 2 s cycle at 1 pulse/s (issue 16: within twice the step's 512 bytes): the publishing
    # step, the idle steps, two pulses (a float each, firmware/pulses.py) and the loop's
    # sleeps. The simulator's files are read only when the control FIFO says one changed: a
    # board reads a pin and its Wi-Fi driver's state, and nothing allocates in the sleeps.
    # Before (the files looked at once a second, in the sleep): 768 bytes more, 1 280 a cycle.
    m = re.search(r"CYCLE ALLOC (\d+) (\d+)", r.stdout)
    assert m and int(m.group(2)) >= 5, r.stdout
    assert int(m.group(1)) <= 1024, r.stdout
    m = re.search(r"SLEEP ALLOC (\d+) (\d+)", r.stdout)
    assert m and int(m.group(2)) >= 100, r.stdout
    assert int(m.group(1)) == 0, "the HAL's sleeps allocate: " + r.stdout
    # And the files are still read when they change: the Wi-Fi lost and the button held, seen
    # once the FIFO rang, after one sleep; not before (nothing looks at them uninvited).
    assert "CONTROL connected access_point_not_found 0 1" in r.stdout, r.stdout
