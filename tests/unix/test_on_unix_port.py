"""Logic proven on the real MicroPython runtime (the Unix port), not only on CPython."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from lab.meterhost import MICROPYTHON, ensure_device_tree  # noqa: E402

def test_interrupt_handler_allocates_nothing_under_heap_lock(upy):
    r = upy("tests/unix/isr_heap_lock.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ISR OK" in r.stdout


def test_interrupt_handler_allocates_nothing_on_the_emulated_esp32_ticks(upy):
    # The handler calls hal.ticks_us: in the end-to-end tests, a closure doing the 2**30 wrap.
    r = upy("tests/unix/isr_heap_lock.py", env={"METER_TICKS_WRAP_MS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ISR OK" in r.stdout


def test_portable_logic_tests_pass_on_micropython(upy):
    r = upy("tests/portable/run.py", paths=("tests/portable",), heap="2M")
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout and "FAIL" not in r.stdout


def test_a_full_telemetry_batch_builds_on_a_fragmented_heap(upy):
    r = upy("tests/unix/payload_fragmented.py", heap="64K")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PAYLOAD OK: 20 readings" in r.stdout


def test_the_interned_name_table_stays_below_its_next_doubling():
    # MicroPython interns names in pools that double: five pools hold 620 names (measured on
    # this port by interning names one at a time: the sixth opens at the 621st; the pools'
    # sizes follow py/qstr.c's doubling, the same on the ESP32), and the sixth is one block of
    # about 7 KB (5 KB on ESP32), which a fragmented 110 KB heap does not have: whatever
    # interns a name then fails ("memory allocation failed, allocating 640 bytes"). Every
    # module the firmware can load, main.py's own names and a config check with secrets of
    # every printable character must stay below that, with 15 names left for what a long run
    # interns besides (one-character strings). If this fails: fewer module-level names
    # (const() for private constants), no str iteration or indexing (one-character strings
    # are interned), or an explicit early growth in main.py.
    device = ensure_device_tree()
    env = dict(os.environ, MICROPYPATH=os.path.join(device, "lib") + ":" + device + ":.frozen")
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=2M", "tests/unix/qstr_budget.py"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"n_pool=(\d+), n_qstr=(\d+)", r.stdout)
    assert m, r.stdout
    n_qstr = int(m.group(2))
    assert n_qstr <= 605, "%d interned names: the budget is 605 (the table doubles past 620)" % n_qstr


def test_setup_mode_interns_its_names_in_one_early_growth_and_stays_below_the_next():
    # Setup mode is a boot of its own (firmware/startup.py setup_reason()): microdot and the
    # page take the table of interned names past one doubling (normal operation never does:
    # the budget above), so firmware/setup_mode.py loads them first, while the heap still has
    # the pool's one block; the next doubling (about 1270 names) must stay out of reach.
    device = ensure_device_tree()
    env = dict(os.environ, MICROPYPATH=os.path.join(device, "lib") + ":" + device + ":.frozen")
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=2M", "tests/unix/setup_budget.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    n_qstr = int(re.search(r"n_qstr=(\d+)", r.stdout).group(1))
    assert n_qstr <= 1000, "%d interned names in setup mode: the budget is 1000" % n_qstr
