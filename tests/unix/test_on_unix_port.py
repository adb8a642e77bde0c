"""Logic proven on the real MicroPython runtime (the Unix port), not only on CPython."""


def test_interrupt_handler_allocates_nothing_under_heap_lock(upy):
    r = upy("tests/unix/isr_heap_lock.py")
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
