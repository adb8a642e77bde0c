# Bench-only: which source line allocates, byte by byte, in the meter's main-loop steps
# (bench/alloctrace.py builds the instrumented tree and reads what this prints).
#
# In the traced tree every statement inside a function of firmware/ and umqtt.simple is
# preceded by a call _mt(<site>), where <site> numbers that source line. With the collector
# off, gc.mem_alloc() grows by exactly what is allocated, so the growth between one _mt call
# and the next is charged to the line of the first: a statement's own allocations, plus any
# made by C code it calls. _mt itself allocates nothing (small ints, a preallocated array).
# Two figures per line: net, what gc.mem_alloc() grew by (whole GC blocks, frees
# subtracted), and requested, what micropython.mem_total() grew by (bytes asked for, frees
# not subtracted). They differ by what was freed again within the step: above all the heap
# frames the VM gives a function whose locals and stack exceed VM_MAX_STATE_ON_STACK (11
# words, py/objfun.c), allocated at the call (charged to the calling line) and freed at the
# return (a negative net figure on the callee's last line).
#
# run(): after BENCH_STEADY acknowledged publishes, every Supervisor.step, and every gap
# between two steps (the main loop's pulses.idle() and the HAL's sleep_ms: what the heap
# figure's cycle counts too), is traced for BENCH_CYCLES publish cycles. At the start of the
# next step each prints "ALLOC step <published> <net> <requested>" (or "ALLOC gap ...") and
# then "ALLOC site <site> <net> <requested>" for each site that allocated; site 0 is
# everything outside the instrumented code (the probe's step wrapper, which allocates nothing).

import gc
import os
import sys
from _thread import get_ident
from array import array
from gc import mem_alloc

from micropython import mem_total

_on = 0
_cur = 0
_last = 0
_glast = 0
_bytes = array("l", [0])
_gross = array("l", [0])
_main = get_ident()


def _mt(site):
    # Only the main thread's lines: the HAL's pulse thread (firmware/hal/unix.py _feed) runs
    # traced code too, and its _mt calls, between two of the main thread's, would charge the
    # main thread's bytes to the pulse thread's line. get_ident() is a small int: no allocation.
    global _cur, _last, _glast
    if _on and get_ident() == _main:
        a = mem_alloc()
        g = mem_total()
        _bytes[_cur] += a - _last
        _gross[_cur] += g - _glast
        _cur = site
        _glast = mem_total()
        _last = mem_alloc()


def _start():
    global _on, _cur, _last, _glast
    gc.disable()
    _cur = 0
    _on = 1
    _glast = mem_total()
    _last = mem_alloc()


def _stop():
    global _on
    _on = 0
    _bytes[_cur] += mem_alloc() - _last
    _gross[_cur] += mem_total() - _glast


def _dump(kind, published, b, g):
    total = gross = 0
    for i in range(len(b)):
        total += b[i]
        gross += g[i]
    print("ALLOC %s %d %d %d" % (kind, published, total, gross))
    for i in range(len(b)):
        if b[i] or g[i]:
            print("ALLOC site %d %d %d" % (i, b[i], g[i]))
            b[i] = 0
            g[i] = 0


def run(_overhead, path):
    # path: the meter's main.py, run as the board runs it (bench/probe/probe.py)
    steady = int(os.getenv("BENCH_STEADY") or 3)
    cycles = int(os.getenv("BENCH_CYCLES") or 3)
    n = int(os.getenv("BENCH_SITES") or 4096)
    # One pair of arrays for the step, one for the gap after it: both are printed (and the
    # collector run) at the start of the next step, not at the end of this one. Work done
    # between a step and the main loop's pulses.idle() makes the step look long to the pulse
    # counter (firmware/pulses.py: a chunk whose step exceeds a third of the debounce is not
    # trusted, and its edges leave the power unchanged), so the traced loop would not take
    # the path an untraced one takes; before a step, the loop is asleep as far as it knows.
    # "i": a step's bytes fit 32 bits, and four arrays of "l" would crowd the meter's heap;
    # made from zero bytes (raw), not from a list of n ints, which is twice their size.
    z = bytes(4 * n)
    step_b, step_g, gap_b, gap_g = array("i", z), array("i", z), array("i", z), array("i", z)
    del z
    from firmware.supervisor import Supervisor
    orig = Supervisor.step
    state = [0, 0, -1]  # publishing steps traced, tracing on, the last step's published count

    def step(meter):
        global _bytes, _gross
        if not state[1]:
            orig(meter)
            if meter.pipeline.published >= steady:
                state[1] = 1
                _bytes, _gross = gap_b, gap_g
                _start()  # the gap after this publishing step, up to the next step
            return
        _stop()
        if state[2] >= 0:
            _dump("step", state[2], step_b, step_g)
        _dump("gap", meter.pipeline.published, gap_b, gap_g)
        gc.enable()
        gc.collect()
        if state[0] > cycles:
            print("ALLOC done")
            sys.exit(0)
        before = meter.pipeline.published
        _bytes, _gross = step_b, step_g
        _start()
        orig(meter)
        _stop()
        state[2] = meter.pipeline.published
        if state[2] > before:
            state[0] += 1
        _bytes, _gross = gap_b, gap_g
        _start()  # the gap: run_forever's pulses.idle() and sleep_ms

    Supervisor.step = step
    execfile(path, {"__name__": "__main__"})  # noqa: F821  (a MicroPython builtin; main.py runs the meter until step() exits)
