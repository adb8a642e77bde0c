# The boot loader's one decision: which firmware tree this boot runs (OTA, issue 18).
#
# Lives at the top of the device tree beside main.py and, like main.py, is never replaced over
# the air: the code that decides whether an update proved itself must not be the update's own.
# The trees are the one `make deploy` copied (the flash's top level, or the frozen image: never
# touched by an update) and two OTA slots, ota/1 and ota/2, each a complete firmware package
# unpacked and verified by firmware/ota.py. One record on flash, state/bootslot.json (the format
# of firmware/store.py: JSON, newline, CRC32), says which tree runs:
#
#   {"run": 1, "last": 0, "tries": 1, "version": "2.0", "sum": "<fw_checksum>"}   on trial
#   {"run": 1, "done": "2.0"}            proved itself; UPDATED not yet acknowledged
#   {"run": 0, "reason": "<why>", "stop": "<fw_checksum>"}   rolled back; FAILED not yet sent
#   {"run": 0, "stop": "<fw_checksum>"}  that package failed here: never tried again
#
# (run 0 is the top-level tree; slots are numbers, which MicroPython does not intern.)
#
# A slot on trial counts its boots here, before any of its code runs, and gets _TRIAL_MS per
# boot to reach the run state and get a PUBACK (firmware/ota.py then drops "tries"). A boot
# that crashes, fails at import, or never connects uses up one try; after _TRIES the next
# boot goes back to "last" by itself, leaving "reason" for the old firmware to report. The
# record is only ever replaced whole (temporary file, then rename): a power cut at any line
# leaves the old record or the new one. Anything unreadable boots the top-level tree, which is
# always there.
#
# Names: every name here is one MicroPython interns for good (main.py); the functions reuse
# names the firmware or the runtime has interned anyway.

import json
import os
import sys
from binascii import crc32

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython (the unit tests)
    def const(value):
        return value

_RECORD = const("state/bootslot.json")
_TMP = const("state/bootslot.tmp")
_TRIES = const(3)  # boots a new firmware gets to prove itself
_TRIAL_MS = const(600000)  # per boot: connect, run, get a PUBACK
_PAUSE_S = const(5)  # before the reset after a start that failed: never a tight loop


def read():
    """The slot record, or None when absent or unreadable."""
    try:
        with open(_RECORD, "rb") as f:
            data = f.read(1024)
    except OSError:
        return None
    nl = data.rfind(b"\n", 0, len(data) - 1)
    if nl < 0 or data[-1:] != b"\n":
        return None
    try:
        if int(data[nl + 1:-1], 16) != crc32(data[:nl]) & 0xFFFFFFFF:
            return None
        obj = json.loads(data[:nl])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def write(obj):
    body = json.dumps(obj).encode()
    try:
        os.mkdir("state")
    except OSError:
        pass
    with open(_TMP, "wb") as f:
        f.write(body)
        f.write(b"\n%08x\n" % (crc32(body) & 0xFFFFFFFF))
    # power cut here: the old record is intact; the next write replaces the stray .tmp
    os.rename(_TMP, _RECORD)


def start(obj):
    """The slot this boot runs (0 for the top-level tree), given the record; a boot on trial
    is counted on flash first, and a slot out of tries is rolled back."""
    if obj is None:
        return 0
    run, last, tries = obj.get("run"), obj.get("last"), obj.get("tries")
    run = run if run in (1, 2) else 0
    last = last if last in (1, 2) else 0
    if run:
        try:
            os.stat("ota/%d/firmware/__init__.mpy" % run)
        except OSError:
            tries = _TRIES
            obj["why"] = "slot %d is missing" % run
    if not isinstance(tries, int):
        return run
    if tries < _TRIES:
        obj["tries"] = tries + 1
        write(obj)  # before the slot's code runs: a crash in it counts
        return run
    why = "%s did not reach the run state with a PUBACK in %d boots" % (obj.get("version"), tries)
    if obj.get("why"):
        why += " (last error: %s)" % obj["why"]
    print("bootslot: %s; back to the previous firmware" % why)
    write({"run": last, "reason": why[:160], "stop": obj.get("sum")})
    return last


def run(hal, build):
    """main.py, after the flash is mounted and before the firmware is imported: put the tree
    this boot runs first on sys.path. Returns the HAL to use: for an OTA slot a new one from
    build() (the modules imported from the top-level tree are dropped first), whose watchdog
    feed also watches the trial."""
    try:
        obj = read()
        slot = start(obj)
    except Exception as e:  # never keep a meter from booting: the top-level tree is always there
        print("bootslot: %r; booting the deployed firmware" % e)
        slot = 0
    if not slot or not isinstance(obj.get("tries"), int):
        # Not resident (about 2 KB) except on a trial boot, where main.py's last-chance handler
        # notes a crash's reason with fail().
        sys.modules.pop("bootslot", None)
    if not slot:
        return hal
    # (Constant tuples and bytes: their strings are not interned, unlike a short str literal.)
    sys.path.insert(0, os.getcwd().rstrip("/") + ("/ota/1", "/ota/2")[slot - 1])
    for name in list(sys.modules):
        if name == "firmware" or name.encode()[:9] == b"firmware.":
            del sys.modules[name]
    hal = build()
    if isinstance(obj.get("tries"), int):
        _feed(hal)
    return hal


def _feed(hal):
    # The trial's clock runs outside the firmware on trial: a version that boots but never
    # connects is reset even though its own code never gives up. Checked at each watchdog feed
    # (every main-loop step); the record is read once, when the time is up.
    ms = _TRIAL_MS
    getenv = getattr(os, "getenv", None)  # the Unix port's tests shorten it; a board has no env
    if getenv is not None:
        ms = int(getenv("METER_OTA_TRIAL_S") or ms // 1000) * 1000
    feed, ticks_ms, ticks_diff = hal.wdt_feed, hal.ticks_ms, hal.ticks_diff
    t0 = ticks_ms()

    def wdt_feed():
        if ticks_diff(ticks_ms(), t0) >= ms:
            obj = read()
            if obj is not None and isinstance(obj.get("tries"), int):
                print("bootslot: no PUBACK in the run state within the trial; resetting")
                reset()
            hal.wdt_feed = feed  # proved itself: the plain feed from now on
        feed()

    hal.wdt_feed = wdt_feed


def fail(e):
    """A firmware on trial failed: keep the reason for the FAILED report, should it roll back."""
    try:
        obj = read()
        if obj is not None and isinstance(obj.get("tries"), int):
            obj["why"] = ("%s: %s" % (type(e).__name__, e))[:80]
            write(obj)
    except Exception:
        pass


def reboot(e):
    # main.py: the firmware could not even start (an update that fails at import). Without
    # this the board would drop to the REPL and stay there.
    sys.print_exception(e)  # pyright: ignore[reportAttributeAccessIssue]
    fail(e)
    import time
    time.sleep(_PAUSE_S)
    reset()


def reset():
    try:
        import machine
        machine.reset()  # the board
    except (ImportError, AttributeError):
        pass
    sys.exit(3)  # the Unix port: the harness powers the meter up again (firmware/hal/unix.py)
