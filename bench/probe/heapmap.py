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
# "HEAPMAP obj <label> <bytes>"; "HEAPMAP phase <name> <live bytes>" followed by qstr_info.
# Figures leave out the probe itself (HEAPMAP probe) and its wrappers (HEAPMAP wraps).

import builtins
import gc
import os
import sys

import micropython

_orig_import = builtins.__import__
_overhead = 0
_wraps = 0  # heap held by the wrappers themselves
_steady = 5
_phase = 0

# module -> ((attribute, label, how)): "call" replaces a module-level callable (a class, so
# the instance is counted too, or a function); "meth" wraps a method of class <attribute>.
WRAPS = {
    "firmware.log": (("Log", "Log()", "call"),),
    "firmware.store": (("Store", "Store()", "call"),),
    "firmware.telemetry": (("Payload", "telemetry buffer: Payload()", "call"),),
    "firmware.startup": (("tls_context", "TLS: SSLContext + CA certificates", "call"),
                         ("load_config", "config: startup.load_config() result", "call")),
    "firmware.hal.unix": (("Hal", "HAL: Hal()", "call"),
                          ("Hal.mount", "HAL: mount() (block device, LittleFS)", "meth"),
                          ("Hal.pulse_input", "HAL: pulse_input() (feeder thread, doorbell)",
                           "meth")),
    "firmware.pulses": (("PulseCounter", "PulseCounter()", "call"),),
    "firmware.link": (("Link", "Link() (write buffer)", "call"),
                      ("Link.open", "MQTT connection: Link.open() (client, sockets)", "meth")),
    "firmware.backlog": (("Backlog", "backlog: Backlog() (RAM ring)", "call"),),
    "firmware.gesture": (("BootGesture", "BootGesture()", "call"),),
    "firmware.led": (("StatusLed", "StatusLed()", "call"),),
    "firmware.remote": (("Remote", "Remote()", "call"),
                        ("Remote.on_connect", "Remote.on_connect() (subscriptions)", "meth")),
    "firmware.clock": (("Clock", "Clock()", "call"),),
    "firmware.pipeline": (("Pipeline", "Pipeline() (with the pacer)", "call"),),
    "firmware.supervisor": (("Supervisor", "Supervisor() (with backoff, marker)", "call"),),
}


def _live():
    gc.collect()
    return gc.mem_alloc()


def _say(kind, label, value):
    print("HEAPMAP %s %s %d" % (kind, label, value))


def _begin(name):
    # Printed from a frame of its own: the line's text is garbage, and no pointer to it stays
    # in _measure's frame, where the collector would see it as live.
    print("HEAPMAP imp+ " + name)


def _end(name, a, b):
    if name in sys.modules:
        print("HEAPMAP imp- %s %d %d" % (name, a - _overhead, b - _overhead))
    else:
        print("HEAPMAP imp- %s builtin" % name)  # built in: lives in ROM, not sys.modules


def _measure(name):
    _begin(name)
    a = _live()
    micropython.qstr_info()
    try:
        _orig_import(name, None, None, None, 0)
    finally:
        b = _live()
        micropython.qstr_info()
        _end(name, a, b)
    _patch(name)


def _hook(name, globs=None, locs=None, fromlist=None, level=0):
    if not level and name not in sys.modules:
        dot = name.rfind(".")
        if dot > 0:
            _hook(name[:dot])  # the package first, on its own
        try:
            _measure(name)
        except ImportError:
            pass  # the real import below raises it where the caller expects it
    mod = _orig_import(name, globs, locs, fromlist, level)
    if fromlist and not level:
        leaf = sys.modules.get(name)
        for item in fromlist:
            sub = name + "." + item
            if leaf is not None and item != "*" and sub not in sys.modules and \
                    not hasattr(leaf, item):
                try:
                    _measure(sub)
                except ImportError:
                    pass  # a plain attribute after all
    return mod


def _caller(label, fn):
    def call(*args, **kw):
        a = _live()
        r = fn(*args, **kw)
        b = _live()
        _say("obj", label.replace(" ", "_"), b - a)
        return r
    return call


def _patch(name):
    global _wraps
    todo = WRAPS.get(name)
    if not todo:
        return
    mod = sys.modules[name]
    a = _live()
    # Methods first, while the module attribute is still the class.
    for attr, label, how in sorted(todo, key=lambda t: t[2] == "call"):
        if how == "call":
            orig = getattr(mod, attr)
            if attr == "Supervisor":
                orig.step = _step_wrapper(orig.step)  # on the class: the phase marks
            setattr(mod, attr, _caller(label, orig))
        else:
            cls, meth = attr.split(".")
            c = getattr(mod, cls)
            setattr(c, meth, _caller(label, getattr(c, meth)))
    _wraps += _live() - a


def _phase_mark(label):
    v = _live() - _overhead - _wraps
    _say("phase", label, v)
    micropython.qstr_info()


def _step_wrapper(orig):
    def step(meter):
        global _phase
        if _phase == 0:
            _phase = 1
            _phase_mark("boot")
        orig(meter)
        if _phase == 1 and meter.pipeline.published >= _steady:
            _phase = 2
            _phase_mark("running")
            print("HEAPMAP resident " + " ".join(k for k in sys.modules))
            micropython.mem_info()
            micropython.qstr_info(1)
            print("HEAPMAP done")
            sys.exit(0)
    return step


def run(overhead):
    global _overhead, _steady
    _overhead = overhead
    _say("probe", "bytes", overhead)
    _steady = int(os.getenv("BENCH_STEADY") or 3)
    builtins.__import__ = _hook
    import meter_main  # noqa: F401  (main.py: runs the meter until step() exits)

