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
# run(): after BENCH_STEADY acknowledged publishes, every Supervisor.step is traced for
# BENCH_CYCLES publish cycles. Each step prints "ALLOC step <published> <net> <requested>" and
# then "ALLOC site <site> <net> <requested>" for each site that allocated; site 0 is everything outside the
# instrumented code (the probe's own step wrapper, which allocates nothing).

import gc
import os
import sys
from array import array
from gc import mem_alloc

from micropython import mem_total

_on = 0
_cur = 0
_last = 0
_glast = 0
_bytes = array("l", [0])
_gross = array("l", [0])


def _mt(site):
    global _cur, _last, _glast
    if _on:
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


def _dump(published):
    total = gross = 0
    for i in range(len(_bytes)):
        total += _bytes[i]
        gross += _gross[i]
    print("ALLOC step %d %d %d" % (published, total, gross))
    for i in range(len(_bytes)):
        if _bytes[i] or _gross[i]:
            print("ALLOC site %d %d %d" % (i, _bytes[i], _gross[i]))
            _bytes[i] = 0
            _gross[i] = 0


def run(_overhead):
    global _bytes, _gross
    steady = int(os.getenv("BENCH_STEADY") or 3)
    cycles = int(os.getenv("BENCH_CYCLES") or 3)
    n = int(os.getenv("BENCH_SITES") or 4096)
    _bytes = array("l", [0] * n)
    _gross = array("l", [0] * n)
    from firmware.supervisor import Supervisor
    orig = Supervisor.step
    state = [0, 0]  # publishing steps traced, tracing on

    def step(meter):
        if not state[1]:
            orig(meter)
            if meter.pipeline.published >= steady:
                state[1] = 1
            return
        before = meter.pipeline.published
        _start()
        orig(meter)
        _stop()
        _dump(meter.pipeline.published)
        gc.enable()
        gc.collect()
        if meter.pipeline.published > before:
            state[0] += 1
            if state[0] > cycles:
                print("ALLOC done")
                sys.exit(0)

    Supervisor.step = step
    import meter_main  # noqa: F401  (main.py: runs the meter until step() exits)
