# The boot loader's one decision: which firmware tree this boot runs (OTA, issue 18).
#
# Lives at the top of the device tree beside main.py and, like main.py, is never replaced over
# the air: the code that decides whether an update proved itself must not be the update's own.
# The trees are the one `make deploy` copied (the flash's top level, or the frozen image: never
# touched by an update) and two OTA slots, ota/1 and ota/2, each a complete firmware package
# unpacked and verified by firmware/ota.py. One record on flash, state/bootslot.json (the format
# of firmware/store.py: JSON, newline, CRC32), says which tree runs:
#
#   {"run": 0, "new": "2.0", "name": "<title>", "sum": "<fw_checksum>", "size": <bytes>}
#                                        ota/pkg.bin downloaded and verified (firmware/ota.py)
#   {"run": 1, "last": 0, "tries": 1, "version": "2.0", "sum": "<fw_checksum>"}   on trial
#   {"run": 1, "done": "2.0"}            proved itself; UPDATED not yet acknowledged
#   {"run": 0, "reason": "<why>", "stop": "<fw_checksum>"}   rolled back; FAILED not yet sent
#   {"run": 0, "stop": "<fw_checksum>"}  that package failed here: never tried again
#   {"run": 1, ..., "n": 2, "why": "<error>"}  a confirmed slot whose last 2 starts failed
#
# (run 0 is the top-level tree; slots are numbers, which MicroPython does not intern.)
#
# A confirmed slot can still fail to start later: its flash corrupted after the update proved
# itself. main.py's guard then calls reboot(), which counts the failed start in the record
# ("n", with the error); firmware/remote.py drops "n" once a reading is acknowledged again, so
# the count is of starts that failed in a row. At _FAILS the next boot runs the top-level tree
# (never touched by an update, so the one known to be whole) and leaves "reason" for it to
# report as FAILED, with the package's checksum (kept in the slot at unpacking: ota/<n>/fw_checksum)
# as "stop", so that it is not installed again.
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
_FAILS = const(3)  # failed starts in a row after which a confirmed slot is given up
_SUM = const("ota/%d/fw_checksum")  # the package a slot was unpacked from (its fw_checksum)
_TRIAL_MS = const(600000)  # per boot: connect, run, get a PUBACK
_PAUSE_S = const(5)  # before the reset after a start that failed: never a tight loop
_PKG = const("ota/pkg.bin")  # firmware/ota.py downloads into it
_DL = const("state/otadl.json")  # and notes there which package it holds
_MAGIC = const(b"MOTA1 ")  # tools/ota_package.py
_MANIFEST_MAX = const(8192)
_PIECE = const(512)
_SPARE = const(16384)  # flash left free after unpacking


def read():
    """The slot record, or None when absent or unreadable."""
    return _read(_RECORD)


def _read(path):
    try:
        with open(path, "rb") as f:
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


def _rm(path):
    # A tree, files first (the slot being replaced: nothing points at it).
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _dir(path):
    # The folders above path.
    d = ""
    for part in path.split("/")[:-1]:
        d = d + "/" + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass  # exists


def update(obj):
    """Unpack the verified package (firmware/ota.py) into the slot that is not running; the
    new record: that slot on trial, or the reason it cannot be used; then a reset. Runs at
    boot, before the firmware is imported: the one time the heap is empty. A power cut leaves
    "new" in the record, and the next boot starts over; the running slot is never touched."""
    from hashlib import sha256
    from binascii import hexlify
    run = obj.get("run") if obj.get("run") in (1, 2) else 0
    slot = 2 if run == 1 else 1
    dest = ("ota/1", "ota/2")[slot - 1]
    why = None
    _rm(dest)
    buf = bytearray(_PIECE)
    mv = memoryview(buf)
    try:
        with open(_PKG, "rb") as src:
            head = src.read(16)
            nl = head.find(b"\n")
            n = int(head[len(_MAGIC):nl]) if head.startswith(_MAGIC) and nl > 0 else 0
            if not 0 < n <= _MANIFEST_MAX:
                raise ValueError("not a firmware package for this meter")
            src.seek(nl + 1)
            man = json.loads(src.read(n))
            title, ver, files = (man.get(k) for k in ("title", "version", "files"))
            if title != obj.get("name") or ver != obj.get("new") or not isinstance(files, list):
                raise ValueError("the manifest is not %s %s" % (obj.get("name"), obj.get("new")))
            total, blocks, init = nl + 1 + n, 0, False
            block = os.statvfs(".")[0]
            for e in files:
                p = e[0].encode()
                # Only the firmware package, and nothing that climbs out of the slot.
                if not p.startswith(b"firmware/") or not p.endswith(b".mpy") or b"/." in p or \
                        b"//" in p or len(p) > 64 or not isinstance(e[1], int) or e[1] < 0 or \
                        [c for c in p if not (c in b"_/.-" or 48 <= c <= 57 or 97 <= c <= 122)]:
                    raise ValueError("file %r not allowed in a package" % e[0])
                init = init or p == b"firmware/__init__.mpy"
                total += e[1]
                blocks += (e[1] + block - 1) // block + 1
            st = os.statvfs(".")
            if total != obj.get("size") or not init:
                raise ValueError("the manifest does not describe this package")
            if blocks * block + _SPARE > st[0] * st[4]:
                raise ValueError("the firmware needs %d KB of flash, %d KB free" % (
                    blocks * block // 1024, st[0] * st[4] // 1024))
            for e in files:
                # Copied, then read back and checked: what is on flash is what will run.
                path = dest + "/" + e[0]
                _dir(path)
                left = e[1]
                with open(path, "wb") as f:
                    while left > 0:
                        k = src.readinto(buf if left >= _PIECE else mv[:left])
                        if not k:
                            break
                        f.write(mv[:k])
                        left -= k
                h = sha256()
                with open(path, "rb") as f:
                    while True:
                        k = f.readinto(buf)
                        if not k:
                            break
                        h.update(mv[:k])
                        left += k
                if left != e[1] or hexlify(h.digest()).decode() != e[2]:
                    raise ValueError("%s does not match the manifest" % e[0])
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        why = "%s: %s" % (type(e).__name__, e) if not isinstance(e, ValueError) else str(e)
    if why is None:
        try:
            # Before the switch, like the files: a power cut leaves "new" and a redo.
            with open(_SUM % slot, "wb") as f:
                f.write(str(obj.get("sum")).encode())
        except OSError as e:
            why = "OSError: %s" % e
    if why is None:
        print("bootslot: firmware %s unpacked into slot %d" % (obj.get("new"), slot))
        obj = {"run": slot, "last": run, "tries": 0, "version": obj.get("new"),
               "sum": obj.get("sum")}
    else:
        print("bootslot: the update cannot be applied: %s" % why)
        obj = {"run": run, "reason": why[:160], "stop": obj.get("sum")}
    write(obj)
    # power cut here: the record is final; the package and its note are leftovers that the
    # next download replaces
    for path in (_PKG, _DL):
        try:
            os.remove(path)
        except OSError:
            pass
    # A reset, so the firmware boots into a heap that unpacking has not left in pieces.
    reset()


def start(obj):
    """The slot this boot runs (0 for the top-level tree), given the record; a boot on trial
    is counted on flash first, and a slot out of tries is rolled back."""
    if obj is None:
        return 0
    if "new" in obj:
        update(obj)  # does not return
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
        n = obj.get("n")
        if not run or not isinstance(n, int) or n < _FAILS:
            return run
        # A confirmed slot that no longer starts: back to the top-level tree, for good.
        why = "the firmware in slot %d failed to start %d times in a row (%s)" % (
            run, n, obj.get("why"))
        print("bootslot: %s; booting the deployed firmware" % why)
        sum_ = None
        try:
            with open(_SUM % run, "rb") as f:
                sum_ = f.read(64).decode()
        except (OSError, ValueError):
            pass  # unreadable too: the deployed firmware may install the package again
        write({"run": 0, "reason": why[:160], "stop": sum_})
        return 0
    if tries < _TRIES:
        obj["tries"] = tries + 1
        write(obj)  # before the slot's code runs: a crash in it counts
        return run
    why = "%s did not reach the run state with a PUBACK in %d boots" % (obj.get("version"), tries)
    err = obj.get("why") or (_read("state/lasterr.json") or {}).get("msg")
    if err:  # how it failed to start, or the last error it kept (firmware/supervisor.py)
        why += " (last error: %s)" % err
    print("bootslot: %s; back to the previous firmware" % why)
    write({"run": last, "reason": why[:160], "stop": obj.get("sum")})
    return last


def run(hal, build):
    """main.py, after the flash is mounted and before the firmware is imported: put the tree
    this boot runs first on sys.path. Returns (the HAL to use, the trial's ms or 0): for an
    OTA slot the HAL is a new one from build() (the firmware's modules imported from the
    top-level tree are dropped first), or, with build None, the same one. main.py watches the
    trial: its code stays loaded anyway, and this module's does not."""
    obj = None
    try:
        slot = start(read())
        obj = read() if slot else None
    except Exception as e:  # never keep a meter from booting: the top-level tree is always there
        print("bootslot: %r; booting the deployed firmware" % e)
        slot = 0
    trial = 0
    if obj is not None and isinstance(obj.get("tries"), int):
        trial = _TRIAL_MS
        getenv = getattr(os, "getenv", None)  # the Unix port's tests shorten it; no env on a board
        if getenv is not None:
            trial = int(getenv("METER_OTA_TRIAL_S") or trial // 1000) * 1000
    sys.modules.pop("bootslot", None)  # boot-only: its code goes back to the heap
    if not slot:
        return hal, 0
    # (Constant tuples and bytes: their strings are not interned, unlike a short str literal.)
    sys.path.insert(0, os.getcwd().rstrip("/") + ("/ota/1", "/ota/2")[slot - 1])
    mods = sys.modules
    # Without build (the Unix port) the HAL that mounted the flash stays, with its modules:
    # the mount holds its objects, and the board simulator is not what an update replaces.
    kept = [(name, mods[name]) for name in mods if name.encode()[:12] == b"firmware.hal"] \
        if build is None else ()
    for name in list(mods):
        if name == "firmware" or name.encode()[:9] == b"firmware.":
            del mods[name]
    for name, m in kept:
        mods[name] = m
    if build is not None:
        hal = build()
    return hal, trial


def reboot(e):
    # main.py: the firmware could not even start (an update that fails at import). Without
    # this the board would drop to the REPL and stay there. On trial, the reason is kept for
    # the FAILED report, should it roll back.
    # A confirmed slot counts its failed start ("n"): after _FAILS in a row, start() gives it
    # up. The top-level tree (run 0) has nothing to fall back to: it only pauses and resets.
    sys.print_exception(e)  # pyright: ignore[reportAttributeAccessIssue]
    try:
        obj = read()
        if obj is not None and (isinstance(obj.get("tries"), int) or obj.get("run") in (1, 2)):
            obj["why"] = ("%s: %s" % (type(e).__name__, e))[:80]
            if not isinstance(obj.get("tries"), int):
                n = obj.get("n")
                obj["n"] = (n if isinstance(n, int) else 0) + 1
            # power cut here: the old record, one failed start not counted; the next one is
            write(obj)
    except Exception:
        pass
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
