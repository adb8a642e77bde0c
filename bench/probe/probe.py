# Bench-only instrumentation around the real firmware (or the baseline) on the MicroPython Unix
# port, for bench. Nothing here changes what the meter does; it patches classes before the
# meter is built, measures, and reports "BENCH <key> <value>" lines on the console.
#
# BENCH_TARGET  firmware: run main.py (the copy meter_main.py) | baseline: bench/baseline/naive
# BENCH_FIGURES=1  heap figures: live heap (gc.collect, then gc.mem_alloc) after boot, its peak
#               over every main-loop step (firmware: and inside every connect, at the CONNACK
#               read; baseline: on entry to and exit from every MQTT call) until the first
#               telemetry PUBACK, steady after BENCH_STEADY publishes; then bytes allocated (GC
#               off) by each publishing step and by whole publish cycles, for BENCH_CYCLES cycles
# BENCH_STALL=path   a file the driver writes a number of ms into: the main loop then blocks
#               that long in time.sleep(), a C call that runs no scheduled handler (on this port
#               time.sleep_ms would run them), while the pulse thread keeps counting. For the
#               firmware the stall ends a main-loop step (Supervisor.step), where a TLS
#               handshake or a flash write would be; for the baseline, its sleep between cycles
# BENCH_FLASH=1 one console line per flash block program and erase
#
# Every figure leaves out the probe's own heap (BENCH probe_bytes).
#
# NAMES (docs/benchmarks.md, "the probe's own names"). MicroPython interns every name of a
# module for good, in pools that double (past about 620 names, one block of about 7 KB): a
# probe with names of its own would move the meter it measures past a pool step the meter
# alone never reaches. So this module uses only names MicroPython has in ROM (state, collect,
# update, start, count, step, read, sleep_ms, writeblocks, ioctl, self, n, ...) or names the
# measured code interns anyway (the baseline's and umqtt's functions and arguments, which it
# wraps with their own names); its state is one list indexed by const() (no name kept), its
# strings long enough (11 characters or more) to be objects, not names. main.py prints the
# count of names before and after importing it: BENCH probe_names, checked in
# tests/bench/test_bench_smoke.py. Wrappers have fixed signatures (no *args), so calling them
# allocates nothing; and no wrapper keeps a module the meter unloads (umqtt.simple, which the
# firmware loads for each connect only) alive: for the firmware the probe wraps its own
# classes, never umqtt's.

import gc
import os
import sys
import time

import micropython
from micropython import const

_OVERHEAD = const(0)  # the probe's own heap (main.py measured it)
_PHASE = const(1)  # 0 boot, 1 provisioning/connect (peak), 2 steady wait, 3 allocation, 4 done
_PEAK = const(2)
_STEADY = const(3)  # acknowledged publishes before heap_steady is taken
_CYCLES = const(4)
_PUBLISHED = const(5)  # baseline: cycles completed
_PUB = const(6)  # [bytes allocated by each publishing step]
_CYCLE = const(7)  # [bytes allocated by each whole cycle]
_IDLE_FROM = const(8)  # mem_alloc at the end of a publishing step
_STALL = const(10)  # the stall file's path, or None
_STALL_NEXT = const(11)
_STEP = const(12)  # originals: Supervisor.step or the baseline's cycle()
_READ = const(13)  # _Net.read (firmware) or MQTTClient.connect (baseline)
_PUBLISH = const(14)
_SUBSCRIBE = const(15)
_WAIT_MSG = const(16)
_DISCONNECT = const(17)
_PROVISION = const(18)
_CONNECT = const(19)
_SLEEP_MS = const(20)
_WRITEBLOCKS = const(21)
_IOCTL = const(22)
_N = const(23)

state = [0] * _N


def collect():
    # The live heap, less the probe's own.
    gc.collect()
    return gc.mem_alloc() - state[_OVERHEAD]


def update():
    # A sampling point: the peak, from boot to the first acknowledged telemetry.
    if state[_PHASE] == 1:
        v = collect()
        if v > state[_PEAK]:
            state[_PEAK] = v


def start():
    # The first main-loop step (firmware) or network call (baseline): boot is done.
    v = collect()
    print("BENCH heap_after_boot_bytes %d" % v)
    state[_PEAK] = v
    state[_PHASE] = 1


def count(n):
    # A telemetry message was acknowledged (n: acknowledged so far).
    if state[_PHASE] == 1:
        state[_PHASE] = 2
        patch(False)
        print("BENCH heap_peak_bytes %d" % state[_PEAK])
    elif state[_PHASE] == 2 and n >= state[_STEADY]:
        print("BENCH heap_steady_bytes %d" % collect())
        micropython.qstr_info()  # the names while running (bench/heap.py: heap_names_steady)
        state[_PHASE] = 3


def end(s, e, published):
    # In phase 3 every step starts with the collector off (s, e: mem_alloc at its start and
    # end). After a publishing step it stays off until the end of the measurement, so a whole
    # cycle is counted: from the end of one publishing step to the end of the next. Not
    # collected in between: a collection here sits between the step and the main loop's
    # pulses.idle(), lengthening the step as the pulse counter sees it (firmware/pulses.py:
    # past a third of the debounce a chunk is not trusted, and its pulse leaves the power, and
    # its float, unchanged; the traced run, bench/alloctrace.py, took that path), and the count
    # needs none: a few cycles' garbage fits the bench's heap (bench/rig.py HEAP).
    if published:
        if state[_IDLE_FROM] >= 0:
            state[_CYCLE].append(e - state[_IDLE_FROM])
        state[_PUB].append(e - s)
        state[_IDLE_FROM] = gc.mem_alloc()  # after the appends: a list that grows allocates
        if len(state[_PUB]) > state[_CYCLES]:
            gc.enable()
            v = sorted(state[_PUB])
            print("BENCH alloc_per_publish_bytes %d" % v[len(v) // 2])
            print("BENCH alloc_per_publish_max_bytes %d" % v[-1])
            v = sorted(state[_CYCLE])
            print("BENCH alloc_per_cycle_bytes %d" % v[len(v) // 2])
            state[_PHASE] = 4
    elif state[_IDLE_FROM] < 0:
        gc.enable()


# --- firmware: firmware.supervisor.Supervisor.step and firmware.link._Net.read ------------------

def step(self):
    # Without BENCH_FIGURES, the phase is 4 from the start: just the step, and the stall after it.
    if state[_PHASE] == 0:
        start()
    n = self.pipeline.published
    if state[_PHASE] == 3:
        gc.disable()
        a = gc.mem_alloc()
        state[_STEP](self)
        end(a, gc.mem_alloc(), self.pipeline.published > n)
    else:
        state[_STEP](self)
        update()
        if self.pipeline.published > n:
            count(self.pipeline.published)
    if state[_STALL]:
        sleep_ms(None, 0)  # where a TLS handshake or a flash write would block


def read(self, n):
    # umqtt's connect() reads the CONNACK through here (firmware/link.py): the point of a
    # connect with the most on the heap (TLS session up, CONNECT sent).
    update()
    r = state[_READ](self, n)
    update()
    return r


# --- baseline: umqtt.simple's MQTTClient methods (the baseline keeps umqtt.simple loaded) ------

def connect(self, clean_session=True):
    update()
    r = state[_READ](self, clean_session)
    update()
    return r


def publish(self, topic, msg, retain=False, qos=0):
    update()
    r = state[_PUBLISH](self, topic, msg, retain, qos)
    update()
    return r


def subscribe(self, topic, qos=0):
    update()
    r = state[_SUBSCRIBE](self, topic, qos)
    update()
    return r


def wait_msg(self):
    update()
    r = state[_WAIT_MSG](self)
    update()
    return r


def disconnect(self):
    update()
    state[_DISCONNECT](self)
    update()


def patch(on):
    # Phase 1 only (the peak): the wrappers on, or the originals back.
    if os.getenv("BENCH_TARGET") != "firmware":  # "firmware": a name the meter has anyway
        from umqtt.simple import MQTTClient as c
        for n, f in ((_READ, connect), (_PUBLISH, publish), (_SUBSCRIBE, subscribe),
                     (_WAIT_MSG, wait_msg), (_DISCONNECT, disconnect)):
            if on:
                state[n] = getattr(c, f.__name__)
            setattr(c, f.__name__, f if on else state[n])
    else:
        from firmware.link import _Net as c
        if on:
            state[_READ] = c.read
        c.read = read if on else state[_READ]


def cycle(c, cfg, last, interval_s):
    n = state[_PUBLISHED]
    if state[_PHASE] == 3:
        gc.disable()
        a = gc.mem_alloc()
        r = state[_STEP](c, cfg, last, interval_s)
        state[_PUBLISHED] = n + 1
        end(a, gc.mem_alloc(), True)
        return r
    r = state[_STEP](c, cfg, last, interval_s)
    state[_PUBLISHED] = n + 1
    count(n + 1)
    return r


# --- stalls and flash counting (firmware/hal/unix.py, patched at class level) ------------------

def sleep_ms(self, ms):
    # Every 100 ms at most: a look at the stall file, and the stall it asks for. The firmware
    # calls this with ms 0 after each step (step()); the baseline sleeps in it (the Hal's).
    while True:
        now = time.ticks_ms()
        if time.ticks_diff(now, state[_STALL_NEXT]) >= 0:
            state[_STALL_NEXT] = time.ticks_add(now, 100)
            n = 0
            try:
                with open(state[_STALL]) as f:
                    n = int(f.read())
                os.remove(state[_STALL])
            except (OSError, ValueError):
                pass
            if n > 0:
                print("BENCH stall %d" % n)
                time.sleep(n / 1000)
                print("BENCH stall_end %d" % n)
        if ms <= 0:
            return
        n = ms if ms < 100 else 100
        state[_SLEEP_MS](self, n)
        ms -= n


def writeblocks(self, n, buf, off=0):
    print("BENCH flash_prog %d" % len(buf))
    state[_WRITEBLOCKS](self, n, buf, off)


def ioctl(self, op, arg):
    if op == 6:
        print("BENCH flash_erase 1")
    return state[_IOCTL](self, op, arg)


def run(n, path):
    # n: the probe's heap (main.py measured it); path: the meter's main.py
    state[_OVERHEAD] = n
    state[_PUB] = []
    state[_CYCLE] = []
    state[_IDLE_FROM] = -1
    print("BENCH probe_bytes %d" % n)
    figures = bool(os.getenv("BENCH_FIGURES"))
    state[_STEADY] = int(os.getenv("BENCH_STEADY") or 5)
    state[_CYCLES] = int(os.getenv("BENCH_CYCLES") or 5)
    state[_STALL] = os.getenv("BENCH_STALL")
    baseline = os.getenv("BENCH_TARGET") != "firmware"
    from firmware.hal import unix
    if state[_STALL] and baseline:
        state[_SLEEP_MS] = unix.Hal.sleep_ms
        unix.Hal.sleep_ms = sleep_ms
    if os.getenv("BENCH_FLASH"):
        state[_WRITEBLOCKS] = unix.FileBlockDev.writeblocks
        state[_IOCTL] = unix.FileBlockDev.ioctl
        unix.FileBlockDev.writeblocks = writeblocks
        unix.FileBlockDev.ioctl = ioctl
    del unix
    if figures:
        patch(True)
    else:
        state[_PHASE] = 4
    if baseline:
        # bench/baseline/naive.py, by a name made at run time: interned in the baseline's runs
        # only (it interns it itself), not in the firmware's
        naive = __import__(b"naive".decode())

        # The baseline's first network call ends its boot. Defined here, not at the top: two
        # functions named connect (the wrappers keep the names of what they wrap).
        def provision(cfg, name):
            if state[_PHASE] == 0:
                start()
            update()
            r = state[_PROVISION](cfg, name)
            update()
            return r

        def connect(cfg, name, token):
            if state[_PHASE] == 0:
                start()
            update()
            r = state[_CONNECT](cfg, name, token)
            update()
            return r

        if figures:
            state[_PROVISION], naive.provision = naive.provision, provision
            state[_CONNECT], naive.connect = naive.connect, connect
            state[_STEP], naive.cycle = naive.cycle, cycle
        naive.main()
    else:
        if figures or state[_STALL]:
            from firmware.supervisor import Supervisor
            state[_STEP] = Supervisor.step
            Supervisor.step = step
            del Supervisor
        # main.py, as the board runs it (compiled from source, its names interned as there)
        execfile(path, {"__name__": "__main__"})  # noqa: F821  (a MicroPython builtin)
    sys.exit(0)
