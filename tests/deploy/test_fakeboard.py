"""lab/fakeboard.py: a pseudo-terminal that speaks MicroPython's REPL and raw REPL."""

import os
import select
import time

from deploy_support import MPREMOTE, run, wait_until


def mp(board, *args):
    return run([MPREMOTE, "connect", board.port] + list(args), timeout=60)


def read_until(fd, marker, timeout=10.0):
    buf = b""
    end = time.time() + timeout
    while marker not in buf:
        left = end - time.time()
        assert left > 0, "no %r in %r" % (marker, buf)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            buf += os.read(fd, 4096)
    return buf


def test_raw_repl_bytes_and_soft_reset_as_a_board_sends_them(board):
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\r\x03\x03")
        time.sleep(0.2)
        os.write(fd, b"\r\x01")
        read_until(fd, b"raw REPL; CTRL-B to exit\r\n>")
        os.write(fd, b"x = 6 * 7\nprint(x)\x04")
        assert read_until(fd, b"\x04>").endswith(b"OK42\r\n\x04\x04>")
        os.write(fd, b"\x04")  # Ctrl-D on an empty raw-REPL line: soft reset
        out = read_until(fd, b"raw REPL; CTRL-B to exit\r\n>")
        assert out.startswith(b"OK\r\nMPY: soft reboot\r\n"), out
        os.write(fd, b"print(x)\x04")  # a fresh interpreter: x is gone
        assert b"NameError" in read_until(fd, b"\x04>")
        os.write(fd, b"\x02")  # back to the friendly REPL
        assert b">>> " in read_until(fd, b">>> ")
    finally:
        os.close(fd)
    assert board.events() == ["fakeboard: soft reset"]


def test_mpremote_exec_files_and_fresh_heap_per_session(board, tmp_path):
    r = mp(board, "exec", "import os, sys; print(os.getcwd()); print(sys.path[:3])")
    assert r.returncode == 0, r.stderr
    assert board.root in r.stdout and "['', '.frozen', 'lib']" in r.stdout
    src = tmp_path / "hello.txt"
    src.write_text("hello board\n")
    r = mp(board, "fs", "mkdir", ":d", "+", "fs", "cp", str(src), ":d/hello.txt", "+",
           "fs", "cp", str(src), ":d/hello.txt", "+", "exec", "g = 1")
    assert r.returncode == 0, r.stderr
    assert "Up to date: d/hello.txt" in r.stdout  # mpremote compared sha256 on the board
    with open(os.path.join(board.root, "d", "hello.txt")) as f:
        assert f.read() == "hello board\n"
    r = mp(board, "exec", "print(g)")  # mpremote soft-resets first: the global is gone
    assert "NameError" in r.stdout + r.stderr
    r = mp(board, "exec", "g = 2", "+", "resume", "eval", "g")
    assert r.stdout.strip().endswith("2")


def test_machine_reset_reboots_into_the_friendly_repl(board):
    r = mp(board, "reset")
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: "fakeboard: hard reset" in board.events())
    r = mp(board, "eval", "1 + 1")  # the board answers again after the reset
    assert r.returncode == 0 and r.stdout.strip() == "2"


def test_frozen_modules_import_but_are_not_on_the_filesystem(board_factory, tmp_path):
    frozen = tmp_path / "frozen"
    (frozen / "umqtt").mkdir(parents=True)
    (frozen / "umqtt" / "__init__.py").write_text("")
    (frozen / "umqtt" / "simple.py").write_text("FROZEN = True\n")
    b = board_factory(frozen=str(frozen))
    r = mp(b, "exec", "import os, umqtt.simple; print(umqtt.simple.FROZEN, os.listdir())")
    assert r.returncode == 0, r.stderr
    assert "True []" in r.stdout
