"""No module writes another's attributes (issue 14). A module that decides something for another
object (the supervisor's connect and attributes states, loaded for their steps; the BOOT
button's hand-over to setup mode; the pipeline restoring the index at boot) returns what it
decided, or calls a method of the owner, and the owner sets its own fields.

The firmware is scanned for every write to an attribute of anything but `self`: `obj.x = ...`,
`self.part.x = ...`, `obj.x += ...`, `del obj.x`, `setattr(obj, ...)`. The few that remain are
listed in ALLOWED, each with its reason; a new one fails here, and so does an entry that no
longer matches the code."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PART = ("a part of its owner in a file of its own, loaded only for the rare work it does "
         "(RAM); both files say so: ")
_CONNECT = _PART + ("connect.py's open() is Link.open()'s body and wrap_socket() a _Net method "
                    "(umqtt calls it with the _Net): it sets up the _Net for the connect; "
                    "Link.open() starts the session itself")
_SYNC = _PART + "Clock.sync()'s NTP exchange sets the clock it checked (firmware/clock.py)"
_BACKLOG = _PART + ("the Backlog's flash half (chunk files: the boot scan, spills, thinning, "
                    "merging, a full filesystem), loaded while it has work (firmware/backlog.py)")
_OTA = _PART + ("Ota.start() loads firmware/ota_check.py for one of an update's rare steps "
                "(start or resume, checksum, FAILED, UPDATED), which sets the download's state")
_SAME_FILE = "the class is this file's own: a module-level function of the owner's module"
_CALLBACK = ("Link.on_message is the link's callback slot (firmware/link.py's API), set by "
             "whoever opens a session")
_WIRING = "the wiring connects the objects it builds (the counter's hardware counter, the log's clock)"
_REMOTE = ("a Remote lives for one session (firmware/remote.py is loaded per session); what it "
           "acted on outlives it in the supervisor, handed to each new one in on_connect() "
           "(Remote takes no constructor argument for it)")
_LIBRARY = "a library's or platform's own setting, as documented"
_UNIX_HAL = "the Unix port's board simulator and its fault injection (never on an ESP32)"

ALLOWED = {
    ("firmware/connect.py", "net._s"): _CONNECT,
    ("firmware/connect.py", "net.server"): _CONNECT,
    ("firmware/connect.py", "net.ctx"): _CONNECT,
    ("firmware/connect.py", "net.host"): _CONNECT,
    ("firmware/connect.py", "um.socket"): "umqtt.simple's module global socket: its connect() "
                                          "calls socket.socket(), and the _Net stands in",
    ("firmware/sync.py", "clock._offset"): _SYNC,
    ("firmware/sync.py", "clock.last"): _SYNC,
    ("firmware/sync.py", "clock.synced"): _SYNC,
    ("firmware/backlog_flash.py", "queue.max_points"): _BACKLOG,
    ("firmware/backlog_flash.py", "queue.files_max"): _BACKLOG,
    ("firmware/backlog_flash.py", "queue.thinned"): _BACKLOG,
    ("firmware/backlog_flash.py", "queue._offset"): _BACKLOG,
    ("firmware/backlog_flash.py", "queue.writes"): _BACKLOG,
    ("firmware/backlog_flash.py", "queue.errors"): _BACKLOG,
    ("firmware/ota_check.py", "ota._len"): _OTA,
    ("firmware/ota_check.py", "ota._since"): _OTA,
    ("firmware/ota_check.py", "ota._count"): _OTA,
    ("firmware/ota_check.py", "ota.state"): _OTA,
    ("firmware/ota_check.py", "ota._st"): _OTA,
    ("firmware/ota_check.py", "ota._msg"): _OTA,
    ("firmware/remote.py", "remote._acted"): _SAME_FILE,
    ("firmware/remote.py", "remote._since"): _SAME_FILE,
    ("firmware/hal/unix.py", "hw.total"): _SAME_FILE,
    ("firmware/supervisor.py", "self.link.on_message"): _CALLBACK,
    ("firmware/provision.py", "link.on_message"): _CALLBACK,
    ("firmware/pipeline.py", "self.pulses.index"):
        "the index's starting value, set once at boot before the counter's first service(): it "
        "is the pipeline's own flash record (read, checked and written there alone); a method "
        "on PulseCounter for it would cost 64 bytes of heap for one store",
    ("firmware/wiring.py", "pulses.hw"): _WIRING,
    ("firmware/wiring.py", "log.uptime_ms"): _WIRING,
    ("firmware/supervisor.py", "remote._acted"): _REMOTE,
    ("firmware/startup.py", "ctx.verify_mode"): _LIBRARY + " (ssl.SSLContext)",
    ("firmware/hal/unixrtc.py", "ctx.verify_mode"): _LIBRARY + " (ssl.SSLContext)",
    ("firmware/setup_http.py", "Request.max_readline"): _LIBRARY + " (microdot's limits)",
    ("firmware/setup_http.py", "Request.max_content_length"): _LIBRARY + " (microdot's limits)",
    ("firmware/setup_http.py", "Request.max_body_length"): _LIBRARY + " (microdot's limits)",
    ("firmware/setup_http.py", "md.print_exception"): _LIBRARY + " (microdot logs a handler's "
                                                      "exception through it: counted instead)",
    ("firmware/hal/unixrtc.py", "hal.ssl"): _UNIX_HAL,
    ("firmware/hal/unix_faults.py", "hal.full"): _UNIX_HAL,
    ("firmware/hal/unix_faults.py", "dev.writeblocks"): _UNIX_HAL,
    ("firmware/hal/unix.py", "delattr(sys.modules['firmware.hal'], ...)"):
        "a module unloaded at once: its package's name for it goes with it (as firmware.unload)",
}


def _targets(node):
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    if isinstance(node, ast.Delete):
        return node.targets
    return []


def foreign_writes(source):
    """(line, target) for every write to an attribute of anything but `self`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("setattr", "delattr") and node.args and \
                not (isinstance(node.args[0], ast.Name) and node.args[0].id == "self"):
            found.append((node.lineno, "%s(%s, ...)" % (node.func.id, ast.unparse(node.args[0]))))
        stack = list(_targets(node))
        while stack:
            t = stack.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                stack.extend(t.elts)
            elif isinstance(t, ast.Starred):
                stack.append(t.value)
            elif isinstance(t, ast.Attribute) and \
                    not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                found.append((t.lineno, ast.unparse(t)))
    return found


def _firmware_writes():
    out = []
    for d, _dirs, files in os.walk(os.path.join(ROOT, "firmware")):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
                with open(path, encoding="utf-8") as fh:
                    out += [(rel, line, target) for line, target in foreign_writes(fh.read())]
    return out


def test_no_module_writes_another_objects_attributes():
    writes = _firmware_writes()
    new = ["%s:%d: %s" % w for w in writes if (w[0], w[2]) not in ALLOWED]
    assert not new, ("writes to another object's attributes (return what was decided, or "
                     "call a method of the owner; see this file's head):\n  " + "\n  ".join(new))


def test_every_allowed_write_is_still_in_the_code():
    seen = {(rel, target) for rel, _line, target in _firmware_writes()}
    stale = sorted("%s: %s" % k for k in ALLOWED if k not in seen)
    assert not stale, "ALLOWED lists writes the firmware no longer makes:\n  " + "\n  ".join(stale)


def test_the_scan_finds_every_kind_of_write():
    src = ("def f(sup, now):\n"
           "    sup._held = now\n"
           "    sup.link.pid += 1\n"
           "    a.b, (c.d, *e.f) = 1, (2, 3)\n"
           "    del o.p\n"
           "    setattr(o, 'q', 1)\n"
           "class C:\n"
           "    def m(self):\n"
           "        self.x = 1\n"
           "        self.pulses.index = 2\n"
           "        setattr(self, 'y', 3)\n"
           "        x.y: int = 4\n")
    assert sorted(t for _l, t in foreign_writes(src)) == sorted([
        "sup._held", "sup.link.pid", "a.b", "c.d", "e.f", "o.p", "setattr(o, ...)",
        "self.pulses.index", "x.y"])
