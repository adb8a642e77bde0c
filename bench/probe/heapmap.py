# Bench-only: where the firmware's heap goes (bench/heapmap.py reads what this prints).
#
# Runs the real main.py (as meter_main; it runs firmware/entry.py) with three kinds of
# instrumentation, none of which changes what the meter does:
# - builtins.__import__ is replaced by a hook that measures every first import: gc.collect(),
#   then gc.mem_alloc() and micropython.qstr_info() before and after. Imports inside an import
#   are measured on their own too (the host subtracts them), and `from pkg import sub` imports
#   the submodule through the hook first, so that each module is charged only for itself.
# - Constructors and boot steps (WRAPS) are replaced by wrappers that print the heap they
#   leave behind (live bytes after minus before, each after a collection): the telemetry
#   buffer, the TLS context, the HAL, the backlog, each MQTT connection ...
# - Supervisor.step marks the phases: the first step (boot done), and the step after
#   BENCH_STEADY acknowledged publishes (running), where the interned names are listed
#   (qstr_info(1)) and the run ends.
#
# Lines: "HEAPMAP imp+ <name>", then qstr_info, then "HEAPMAP imp- <name> <before> <after>";
# "HEAPMAP obj <module>:<attribute> <bytes>" (bench/breakdown.py LABELS names them); "HEAPMAP
# phase <name> <live bytes>" followed by qstr_info. Figures leave out the probe itself
# (HEAPMAP probe) and its wrappers (HEAPMAP wraps).
#
# Names: as bench/probe/probe.py, this module interns (nearly) none of its own, so that the
# meter it measures keeps the name pools it has alone: its functions and arguments have names
# MicroPython has in ROM, its state is one list indexed by const(), the wrapped attributes are
# the firmware's own names, and every string is 11 characters or more (an object, not a name).

import builtins
import gc
import os
import sys

import micropython
from micropython import const

_OVERHEAD = const(0)
_WRAPS = const(1)  # heap held by the wrappers themselves
_STEADY = const(2)
_PHASE = const(3)
_IMPORT = const(4)  # the original builtins.__import__
_STEP = const(5)  # the original Supervisor.step
_TABLE = const(6)

state = [0] * 7

# module -> ((attribute, None), ...) replaces a module-level callable (a class, so the instance
# is counted too, or a function); ((class, method), ...) wraps a method of that class.
state[_TABLE] = {
    "firmware.log": (("Log", None),),
    "firmware.store": (("Store", None),),
    "firmware.telemetry": (("Payload", None),),
    "firmware.startup": (("tls_context", None), ("load_config", None)),
    "firmware.hal.unix": (("Hal", "mount"), ("Hal", "pulse_input"), ("Hal", None)),
    "firmware.pulses": (("PulseCounter", None),),
    "firmware.link": (("Link", "open"), ("Link", None)),
    "firmware.backlog": (("Backlog", None),),
    "firmware.gesture": (("BootGesture", None),),
    "firmware.led": (("StatusLed", None),),
    "firmware.remote": (("Remote", "on_connect"), ("Remote", None)),
    "firmware.clock": (("Clock", None),),
    "firmware.pipeline": (("Pipeline", None),),
    "firmware.supervisor": (("Supervisor", None),),
}


def collect():
    gc.collect()
    return gc.mem_alloc()


def write(name):
    # Printed from a frame of its own: the line's text is garbage, and no pointer to it stays
    # in add()'s frame, where the collector would see it as live.
    print("HEAPMAP imp+ " + name)


def end(name, s, e):
    # s, e: the live heap before and after the import
    if name in sys.modules:
        print("HEAPMAP imp- %s %d %d" % (name, s - state[_OVERHEAD], e - state[_OVERHEAD]))
    else:
        print("HEAPMAP imp- %s builtin" % name)  # built in: lives in ROM, not sys.modules


def add(name):
    # One first import, measured.
    write(name)
    a = collect()
    micropython.qstr_info()
    try:
        state[_IMPORT](name, None, None, None, 0)
    finally:
        b = collect()
        micropython.qstr_info()
        end(name, a, b)
    patch(name)


def __import__(name, globals=None, locals=None, args=None, n=0):
    # builtins.__import__ (the VM calls it with 5 positional arguments): args is the fromlist,
    # n the level, named so with names MicroPython has in ROM.
    if not n and name not in sys.modules:
        dot = name.rfind(".")
        if dot > 0:
            __import__(name[:dot])  # the package first, on its own
        try:
            add(name)
        except ImportError:
            pass  # the real import below raises it where the caller expects it
    mod = state[_IMPORT](name, globals, locals, args, n)
    if args and not n:
        leaf = sys.modules.get(name)
        for item in args:
            sub = name + "." + item
            if leaf is not None and item != "*" and sub not in sys.modules and \
                    not hasattr(leaf, item):
                try:
                    add(sub)
                except ImportError:
                    pass  # a plain attribute after all
    return mod


def log(key, f):
    # f wrapped: each call prints the heap it leaves behind.
    def handler(*args, **kw):
        a = collect()
        r = f(*args, **kw)
        b = collect()
        print("HEAPMAP obj %s %d" % (key, b - a))
        return r
    return handler


def patch(name):
    todo = state[_TABLE].get(name)
    if not todo:
        return
    mod = sys.modules[name]
    a = collect()
    # Methods first, while the module attribute is still the class.
    for cls, meth in todo:
        if meth is None:
            orig = getattr(mod, cls)
            if cls == "Supervisor":
                state[_STEP] = orig.step
                orig.step = step  # on the class: the phase marks
            setattr(mod, cls, log(name + ":" + cls, orig))
        else:
            c = getattr(mod, cls)
            setattr(c, meth, log(name + ":" + cls + "." + meth, getattr(c, meth)))
    state[_WRAPS] += collect() - a


def phase(line):
    v = collect() - state[_OVERHEAD] - state[_WRAPS]
    print(line % v)
    micropython.qstr_info()


def step(self):
    if state[_PHASE] == 0:
        state[_PHASE] = 1
        phase("HEAPMAP phase boot %d")
    state[_STEP](self)
    if state[_PHASE] == 1 and self.pipeline.published >= state[_STEADY]:
        state[_PHASE] = 2
        phase("HEAPMAP phase running %d")
        print("HEAPMAP resident " + " ".join(k for k in sys.modules))
        micropython.mem_info()
        micropython.qstr_info(1)
        print("HEAPMAP done")
        sys.exit(0)


def run(n, path):
    # n: the probe's heap (main.py measured it); path: the meter's main.py, run as the board
    # runs it (bench/probe/probe.py)
    state[_OVERHEAD] = n
    print("HEAPMAP probe bytes %d" % n)
    state[_STEADY] = int(os.getenv("BENCH_STEADY") or 3)
    state[_IMPORT] = builtins.__import__
    builtins.__import__ = __import__
    execfile(path, {"__name__": "__main__"})  # noqa: F821  (a MicroPython builtin; main.py runs the meter until step() exits)
