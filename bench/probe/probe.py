# Bench-only instrumentation around the real firmware (or the baseline) on the MicroPython Unix
# port, for bench. Nothing here changes what the meter does; it patches classes before the
# meter is built, measures, and reports "BENCH <key> <value>" lines on the console.
#
# BENCH_TARGET  firmware: import meter_main (a copy of main.py) | baseline: bench/baseline/naive
# BENCH_HEAP=1  heap figures: live heap (gc.collect, then gc.mem_alloc) after boot, its peak
#               over every MQTT call and main-loop step until the first telemetry PUBACK, steady
#               after BENCH_STEADY publishes; then bytes allocated (GC off) by each publishing
#               step and by whole publish cycles, for BENCH_CYCLES cycles
# BENCH_STALL=path   a file the driver writes a number of ms into: the main loop then blocks
#               that long in time.sleep(), a C call that runs no scheduled handler (on this port
#               time.sleep_ms would run them), while the pulse thread keeps counting. For the
#               firmware the stall ends a main-loop step (Supervisor.step), where a TLS
#               handshake or a flash write would be; for the baseline, its sleep between cycles
# BENCH_FLASH=1 one console line per flash block program and erase
#
# Every figure leaves out the probe's own heap (BENCH probe_bytes). Wrappers have fixed
# signatures (no *args), so calling them allocates nothing.

import gc
import os
import sys
import time

_overhead = 0
_phase = 0  # 0 boot, 1 provisioning/connect (peak), 2 steady wait, 3 allocation, 4 done
_peak = 0
_steady_after = 5
_cycles = 5
_published = 0  # baseline: cycles completed
_alloc_pub = []
_alloc_cycle = []
_idle_from = -1  # mem_alloc at the end of a publishing step
_stall_path = None
_stall_next = 0
_orig = {}
_box = [None] * 5  # a baseline cycle's arguments and result, for _measured


def _say(key, value):
    print("BENCH %s %d" % (key, value))


def _live():
    gc.collect()
    return gc.mem_alloc() - _overhead


def _sample():
    global _peak
    if _phase == 1:
        v = _live()
        if v > _peak:
            _peak = v


# --- umqtt.simple: sampling points shared by firmware and baseline ----------------------------

def _connect(self, clean_session=True):
    _sample()
    r = _orig["connect"](self, clean_session)
    _sample()
    return r


def _publish(self, topic, msg, retain=False, qos=0):
    _sample()
    r = _orig["publish"](self, topic, msg, retain, qos)
    _sample()
    return r


def _subscribe(self, topic, qos=0):
    _sample()
    r = _orig["subscribe"](self, topic, qos)
    _sample()
    return r


def _wait_msg(self):
    _sample()
    r = _orig["wait_msg"](self)
    _sample()
    return r


def _disconnect(self):
    _sample()
    _orig["disconnect"](self)
    _sample()


_MQTT = (("connect", _connect), ("publish", _publish), ("subscribe", _subscribe),
         ("wait_msg", _wait_msg), ("disconnect", _disconnect))


def _patch_mqtt(on):
    from umqtt.simple import MQTTClient
    for name, fn in _MQTT:
        if on:
            _orig[name] = getattr(MQTTClient, name)
        setattr(MQTTClient, name, fn if on else _orig[name])


# --- phases ---------------------------------------------------------------------------------------

def _boot_done():
    global _phase, _peak
    v = _live()
    _say("heap_after_boot_bytes", v)
    _peak = v
    _phase = 1


def _published_one(count):
    # Called once a telemetry message has been acknowledged (count: acknowledged so far).
    global _phase
    if _phase == 1:
        _phase = 2
        _patch_mqtt(False)
        _say("heap_peak_bytes", _peak)
    elif _phase == 2 and count >= _steady_after:
        _say("heap_steady_bytes", _live())
        _phase = 3


def _measured(run_step, arg, count_before, count_of):
    # In phase 3 every step starts with the collector off. After a publishing step it stays
    # off until the end of the measurement, so a whole cycle is counted: from the end of one
    # publishing step to the end of the next. Not collected in between: a collection here
    # sits between the step and the main loop's pulses.idle(), lengthening the step as the
    # pulse counter sees it (firmware/pulses.py: past a third of the debounce a chunk is not
    # trusted, and its pulse leaves the power, and its float, unchanged; the traced run,
    # bench/alloctrace.py, took that path), and the count needs none: a few cycles' garbage
    # fits the bench's heap (bench/rig.py HEAP).
    global _phase, _idle_from
    gc.disable()
    a = gc.mem_alloc()
    run_step(arg)
    b = gc.mem_alloc()
    if count_of(arg) > count_before:
        if _idle_from >= 0:
            _alloc_cycle.append(b - _idle_from)
        _alloc_pub.append(b - a)
        _idle_from = gc.mem_alloc()  # after the appends: a list that grows allocates
        if len(_alloc_pub) > _cycles:
            gc.enable()
            _report_alloc()
            _phase = 4
    elif _idle_from < 0:
        gc.enable()


def _median(v):
    v = sorted(v)
    return v[len(v) // 2]


def _report_alloc():
    _say("alloc_per_publish_bytes", _median(_alloc_pub))
    _say("alloc_per_publish_max_bytes", max(_alloc_pub))
    _say("alloc_per_cycle_bytes", _median(_alloc_cycle))


# --- firmware ---------------------------------------------------------------------------------------

def _fw_published(meter):
    return meter.pipeline.published


def _fw_step(meter):
    # Without BENCH_HEAP, _phase is 4 from the start: just the step, and the stall after it.
    if _phase == 0:
        _boot_done()
    if _phase == 3:
        _measured(_orig["step"], meter, meter.pipeline.published, _fw_published)
    else:
        before = meter.pipeline.published
        _orig["step"](meter)
        _sample()
        if meter.pipeline.published > before:
            _published_one(meter.pipeline.published)
    if _stall_path:
        _sleep_ms(None, 0)  # where a TLS handshake or a flash write would block


def _run_firmware(heap):
    global _phase
    if heap or _stall_path:
        from firmware.supervisor import Supervisor
        _orig["step"] = Supervisor.step
        Supervisor.step = _fw_step
    if heap:
        _patch_mqtt(True)
    else:
        _phase = 4
    import meter_main  # noqa: F401  (main.py: runs the meter)


# --- baseline ---------------------------------------------------------------------------------------

def _bl_count(_arg):
    return _published


def _bl_cycle(c, cfg, last, interval_s):
    global _published
    if _phase == 3:
        box = _box  # preallocated: filling it allocates nothing
        box[0], box[1], box[2], box[3] = c, cfg, last, interval_s
        _measured(_bl_run_cycle, box, _published, _bl_count)
        return box[4]
    r = _orig["bl_cycle"](c, cfg, last, interval_s)
    _published += 1
    _published_one(_published)
    return r


def _bl_run_cycle(box):
    global _published
    box[4] = _orig["bl_cycle"](box[0], box[1], box[2], box[3])
    _published += 1


def _bl_provision(cfg, name):
    if _phase == 0:
        _boot_done()
    _sample()
    r = _orig["bl_provision"](cfg, name)
    _sample()
    return r


def _bl_connect(cfg, name, token):
    if _phase == 0:
        _boot_done()
    _sample()
    r = _orig["bl_connect"](cfg, name, token)
    _sample()
    return r


def _run_baseline(heap):
    import naive
    if heap:
        _orig["bl_provision"], naive.provision = naive.provision, _bl_provision
        _orig["bl_connect"], naive.connect = naive.connect, _bl_connect
        _orig["bl_cycle"] = naive.cycle
        naive.cycle = _bl_cycle
        _patch_mqtt(True)
    naive.main()


# --- stalls and flash counting (firmware/hal/unix.py, patched at class level) ------------------------

def _sleep_ms(self, ms):
    # Every 100 ms at most: a look at the stall file, and the stall it asks for. The firmware
    # calls this with ms 0 after each step (_fw_step); the baseline sleeps in it (the Hal's).
    global _stall_next
    while True:
        now = time.ticks_ms()
        if time.ticks_diff(now, _stall_next) >= 0:
            _stall_next = time.ticks_add(now, 100)
            n = 0
            try:
                with open(_stall_path) as f:
                    n = int(f.read())
                os.remove(_stall_path)
            except (OSError, ValueError):
                pass
            if n > 0:
                print("BENCH stall %d" % n)
                time.sleep(n / 1000)
                print("BENCH stall_end %d" % n)
        if ms <= 0:
            return
        chunk = ms if ms < 100 else 100
        _orig["sleep_ms"](self, chunk)
        ms -= chunk


def _writeblocks(self, n, buf, off=0):
    print("BENCH flash_prog %d" % len(buf))
    _orig["writeblocks"](self, n, buf, off)


def _ioctl(self, op, arg):
    if op == 6:
        print("BENCH flash_erase 1")
    return _orig["ioctl"](self, op, arg)


def _patch_hal():
    from firmware.hal import unix
    if _stall_path and os.getenv("BENCH_TARGET") == "baseline":
        _orig["sleep_ms"] = unix.Hal.sleep_ms
        unix.Hal.sleep_ms = _sleep_ms
    if os.getenv("BENCH_FLASH"):
        _orig["writeblocks"] = unix.FileBlockDev.writeblocks
        _orig["ioctl"] = unix.FileBlockDev.ioctl
        unix.FileBlockDev.writeblocks = _writeblocks
        unix.FileBlockDev.ioctl = _ioctl


def run(overhead):
    global _overhead, _stall_path, _steady_after, _cycles
    _overhead = overhead
    _say("probe_bytes", overhead)
    heap = bool(os.getenv("BENCH_HEAP"))
    _steady_after = int(os.getenv("BENCH_STEADY") or 5)
    _cycles = int(os.getenv("BENCH_CYCLES") or 5)
    _stall_path = os.getenv("BENCH_STALL")
    _patch_hal()
    if os.getenv("BENCH_TARGET") == "baseline":
        _run_baseline(heap)
    else:
        _run_firmware(heap)
    sys.exit(0)
