# Hardware boundary for the MicroPython Unix port: `make sim` and the end-to-end tests run the
# same main.py and firmware/ as the ESP32 on this. Fakes stop here, at the hardware edge:
#
# - Flash: a LittleFS2 filesystem on a file-backed block device (METER_FLASH, default
#   flash.img), mounted at /flash and made the working directory, so a SIGKILL behaves like a
#   power cut on real flash (copy-on-write metadata, atomic rename).
# - Pulses: a thread reads the FIFO named by METER_PULSES; every 4-byte record is one edge on
#   the pulse pin and says when it happens: the host's monotonic clock in µs (the clock this
#   port's ticks_us reads), its low 30 bits, little-endian (bit 31 tells the writer's real
#   pulses from noise; the thread ignores it). An edge whose time is ahead waits for it (at
#   most _AHEAD_MAX_US), so a writer hands over a real edge and its contact bounce in one
#   write and the thread replays their sub-millisecond timing (lab/meterhost.py). Like the
#   ESP32 the thread plays both pieces of hardware: the PCNT counter (counts every edge, bounce
#   and spikes included, whatever Python is doing) and the GPIO interrupt, delivered through
#   micropython.schedule as ESP32 soft IRQs are, queue overflow included (the edge then reaches
#   only the counter). Counting and scheduling happen together (a lock against take()), as
#   PCNT and the GPIO interrupt see the same edge within microseconds; an OS thread preempted
#   between the two would not.
#   Edge times are carried, not taken from when the thread gets to run: on a loaded host the
#   writer, the pipe and this thread are each scheduled milliseconds late, now and then, and
#   an edge played late moves the signal itself (a bounce 3 ms after its pulse, played 14 ms
#   late, is a new pulse to any debounce; two pulses 20 ms apart, played 5 ms apart, are one).
#   A board's GPIO interrupt fires within microseconds of the edge; what is late there is
#   only the soft IRQ, while the main thread is busy. So while a handler runs, ticks_us reads
#   earlier by as much as the thread played its edge late (_st): the handler's timestamp is
#   the edge's time plus the main thread's own latency, as on the board, and never earlier
#   than the previous handler's (_irq): handlers run in turn, each reading the clock. Only the counter's
#   increment lands when the thread plays it (milliseconds, rarely).
# - Network: METER_NET names a file holding "up" (default), "down" (Wi-Fi lost: no sockets, no
#   DNS), "nodns" (Wi-Fi up, name resolution fails) or "nontp" (Wi-Fi, DNS and TCP work, NTP's
#   UDP port 123 is blocked). Sockets are real TCP to the host.
#   Further lines script the site's networks, one per line, tab-separated:
#   "net<TAB><rssi dBm><TAB><ssid><TAB><password>". With any listed, a join works only with a
#   listed network's name and password (else "access point not found" or "wrong password", as
#   wifi_status() says), a joined meter drops off when its line changes (the site changed its
#   password), and the access point's scan lists them; with none, every join works
#   (firmware/hal/unix_ap.py judges them, loaded only when the script lists any).
# - METER_CONTROL: a FIFO the harness writes a byte to after it changes the network or BOOT
#   button file (lab/meterhost.py). The files are looked at once at boot, and then only when a
#   byte arrives: the main loop's sleep polls the FIFO with the pulse doorbell, so a change is
#   seen within one main-loop step, and a meter whose files do not change reads nothing
#   (reading them allocates: a file object, its text; a board reads a register its Wi-Fi task
#   and pin keep up to date, and make bench's allocations per cycle are the firmware's own).
#   Without METER_CONTROL the files are read at boot only; a person editing them by hand
#   writes to the FIFO too (echo >control).
# - Access point (setup mode): firmware/hal/unix_ap.py, loaded only in setup mode.
# - Time: the RTC reads the host's clock, and NTP answers from it, unless METER_NTP=fail, the
#   network file says "nontp", or there is no network. METER_RTC models an RTC of its own
#   instead (starting at 2000, drifting, jumping), and the board's TLS date check against it
#   (firmware/hal/unixrtc.py, loaded only then, says how).
# - Ticks: METER_TICKS_WRAP_MS=N gives ticks_ms, ticks_us, ticks_diff and ticks_add the ESP32's
#   2**30 period (this port's is 2**62, which no test would ever see wrap), both starting N ms
#   before they wrap; ticks_us then wraps every 17.9 min, ticks_ms every 12.4 days. The virtual
#   meters (lab/meterhost.py) run with it.
# - METER_UID: hex unique id (the MAC on a board); METER_BUTTON: a file whose presence means
#   the BOOT button is held (looked at with the network file, METER_CONTROL);
#   METER_FLASH_DELAY_MS: a slow flash chip (each block write blocks).
# - Flash faults (the meter must degrade, never reset: README, when the flash fails):
#     a smaller flash               an image keeps the size it was made with (file size / 4096
#                                   blocks; a new one has 512, 2 MiB): create the file, 0xFF
#                                   bytes, before first use
#     METER_FLASH_EIO_AFTER=<n>     a worn chip: after n block programs since power-up, every
#                                   program fails with EIO (0: from boot)
#     METER_FLASH_EIO_FROM_MS=<ms>  programs fail with EIO from this uptime on ...
#     METER_FLASH_EIO_UNTIL_MS=<ms> ... and work again from this one (a flaky supply or
#                                   connection to the chip; without it, until power-off)
#     METER_FLASH_FULL_FROM_MS=<ms> at this uptime (0: at boot) the filesystem fills up: files
#                                   ballast<k>.bin at its root take every free block, as other
#                                   data would, and stay (lab/flashimg.py IMAGE rm ...)
#   EIO is the block device's answer (a negative errno, which LittleFS hands up), so each
#   write site sees what a failing chip gives it: OSError(EIO) from the write, the close or the
#   rename that needed the block. Erases are not refused: LittleFS erases a block only right
#   before it programs it. ENOSPC comes from LittleFS itself, on a really full filesystem.
#   Set up and played by firmware/hal/unix_faults.py, imported only for the moment it takes
#   (an armed EIO keeps it, in the block device it wraps): the simulator's test-only code stays
#   out of the heap the meter runs in (the tests' heap stands for the ESP32's). EIO is armed
#   before LittleFS mounts, so a blank image cannot be formatted under it: give the meter an
#   image made beforehand (lab/flashimg.py).
# - METER_FAULT_MS: the first watchdog feed after this many ms of uptime raises RuntimeError,
#   an unexpected fault deep in the main loop, for the tests of the last-chance handler
#   (firmware/entry.py).
# - reset(): exits with RESET_EXIT_CODE; the harness (lab/meterhost.py) powers the meter up
#   again, like the chip's reset line would, with METER_RESET=1 (the reset reason register:
#   it survives a reset, not a power cut). reset_cause() reads it: 1 reset, 2 watchdog, unset
#   a power-up, as on the ESP32.

import gc
import os
import socket as _socket
import ssl
import sys
import time

import micropython
from array import array
from micropython import const

RESET_EXIT_CODE = 3
_BLOCK = const(4096)
_ERASE_CHUNK = const(256)
_BLOCKS = const(512)  # 2 MiB, the data partition of a 4 MiB ESP32 module
_TICKS_MASK = const(0x3FFFFFFF)  # the ESP32's ticks period, 2**30, minus 1
_TICKS_HALF = const(0x20000000)
_EDGE_REC = const(4)  # bytes per edge in the pulse FIFO
_EDGE_MASK = const(0x3FFFFFFF)  # edge times: the low 30 bits of the monotonic µs clock
_EDGE_HALF = const(0x20000000)
_AHEAD_MAX_US = const(100000)  # an edge further ahead is a writer's mistake: played then
_RING = const(16)  # per-edge lateness slots, > the 4 soft IRQs this port's queue holds
_PREV_LATE = const(17)  # _RING + 1
_PREV_US = const(18)  # _RING + 2
_ASLEEP = const(19)  # 1 while the main thread is in sleep_ms
_PLAYED = const(20)  # per slot: ticks_us when the edge was played to a sleeping main thread, or -1
_FAULTS = const("firmware.hal.unix_faults")


class FileBlockDev:
    # LittleFS2 block device (extended interface: offsets within a block) over a host file.
    def __init__(self, path, blocks=_BLOCKS, delay_ms=0):
        self.delay_ms = delay_ms
        # Erased flash reads as 0xFF. Allocated once, at mount time: erases happen mid-run, on
        # a heap that may be too fragmented by then (the ESP32 erases in C). 256 bytes, written
        # 16 times per block, keeps the simulator's own heap use close to the board's.
        self._erased = b"\xff" * _ERASE_CHUNK
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size >= 2 * _BLOCK:
            blocks = size // _BLOCK  # an image keeps the size it was made with
            self._f = open(path, "r+b")
        else:
            self._f = open(path, "w+b")
            for _ in range(blocks * _BLOCK // _ERASE_CHUNK):
                self._f.write(self._erased)
            self._f.flush()
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        self._f.seek(n * _BLOCK + off)
        self._f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        if self.delay_ms:
            # A slow flash chip: the main thread is blocked here, soft IRQs included (time.sleep
            # runs no scheduled callbacks on this port; time.sleep_ms would).
            time.sleep(self.delay_ms / 1000)
        self._f.seek(n * _BLOCK + off)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase
            self._f.seek(arg * _BLOCK)
            for _ in range(_BLOCK // _ERASE_CHUNK):
                self._f.write(self._erased)
            return 0
        return 0


def mount_flash(path, mountpoint="/flash", delay_ms=0, hal=None):
    dev = FileBlockDev(path, delay_ms=delay_ms)
    faults = None
    if hal is not None and (os.getenv("METER_FLASH_EIO_AFTER") or os.getenv(
            "METER_FLASH_EIO_FROM_MS") or os.getenv("METER_FLASH_FULL_FROM_MS")):
        # The meter's own flash, with the faults the environment asks for (header), armed on
        # the device before LittleFS takes its methods. firmware/hal/unix_faults.py is dropped
        # again from sys.modules and the package at once: its code is garbage as soon as this
        # is done with it (or, for an EIO, the device).
        import sys
        __import__(_FAULTS)
        delattr(sys.modules["firmware.hal"], _FAULTS[13:])
        faults = sys.modules.pop(_FAULTS)
        if not faults.mount(hal, dev):
            faults = None  # nothing more to do once mounted
    try:
        os.mount(os.VfsLfs2(dev), mountpoint)
    except OSError:
        os.VfsLfs2.mkfs(dev)  # blank image: format it, as a fresh chip is formatted on first boot
        os.mount(os.VfsLfs2(dev), mountpoint)
    if faults is not None:
        faults.fill(hal)  # METER_FLASH_FULL_FROM_MS=0: full from boot
    return dev


class _HwCounter:
    # The PCNT stand-in: the feeder thread is its only writer, the main loop only reads.
    def __init__(self, lock):
        self.total = 0
        self._taken = 0
        self.lock = lock  # held by the feeder from counting an edge to scheduling its handler

    def take(self):
        self.lock.acquire()
        t = self.total
        self.lock.release()
        n = t - self._taken
        self._taken = t
        return n


class _Net:
    # The socket module as the firmware sees it on the Unix port: real sockets, gated by the
    # scripted Wi-Fi state.
    def __init__(self, hal):
        self._hal = hal

    def socket(self, *args):
        if self._hal._net() == "down":
            raise OSError(113)  # EHOSTUNREACH: no Wi-Fi
        return _socket.socket(*args)

    def getaddrinfo(self, host, port, *args):
        state = self._hal._net()
        if state in ("down", "nodns"):
            raise OSError(-2)  # lwIP-style DNS failure
        return _socket.getaddrinfo(host, port, *args)


class Hal:
    name = "unix"

    def __init__(self):
        tms, tus, tadd = time.ticks_ms, time.ticks_us, time.ticks_add
        # _st (a name the firmware interns anyway: pulses.py's state array; one name less):
        # _st[_RING]: how late the pulse thread played the edge whose handler runs now (µs,
        # <= 0), 0 outside handlers; _st[0:_RING]: the same per queued edge. See Pulses above.
        # _st[_PREV_LATE], _st[_PREV_US]: the last handler's lateness and the port's ticks_us
        # when it ran (_irq).
        # _st[_ASLEEP], _st[_PLAYED:_PLAYED + _RING]: see sleep_ms and _irq.
        late = self._st = array("l", [0] * (_PLAYED + _RING))
        for i in range(_RING):
            late[_PLAYED + i] = -1
        self.ticks_ms = tms
        self.ticks_us = lambda: tadd(tus(), late[_RING])  # allocates nothing: small ints
        self.ticks_diff, self.ticks_add = time.ticks_diff, tadd
        wrap = os.getenv("METER_TICKS_WRAP_MS")
        if wrap:
            # The ESP32's period, both ticks starting `wrap` ms before their wrap. Nothing here
            # allocates: the interrupt handler calls ticks_us.
            wrap = int(wrap)
            ms_off = (-wrap - tms()) & _TICKS_MASK
            us_off = (-wrap * 1000 - tus()) & _TICKS_MASK
            self.ticks_ms = lambda: (tms() + ms_off) & _TICKS_MASK
            self.ticks_us = lambda: (tus() + us_off + late[_RING]) & _TICKS_MASK
            self.ticks_diff = lambda s, t: ((s - t + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF
            self.ticks_add = lambda s, t: (s + t) & _TICKS_MASK
        self.socket = _Net(self)
        self.ssl = ssl
        rtc = os.getenv("METER_RTC")
        if rtc:
            # An RTC of its own (loaded only for these tests), and self.ssl checking against it
            from firmware.hal import unixrtc
            self.epoch_ms = unixrtc.build(self, rtc).epoch_ms
        self._net_file = os.getenv("METER_NET")
        # METER_NET's text (the state, then the site's networks), or None: the files are to be
        # looked at, at the first _net() and after a byte on the control FIFO (sleep_ms).
        self._net_state = None
        self._button = [os.getenv("METER_BUTTON"), False]  # its file; held (_net)
        self._wifi_on = False  # or the (ssid, password) of the join asked for
        self._hw = None
        self._handler = None
        self._wake = None  # UDP socket on loopback: the pulse thread's doorbell
        self._wake_addr = None
        self._wake_buf = bytearray(16)
        self._poll = None  # the wake socket and the control FIFO, polled in sleep_ms
        path = os.getenv("METER_CONTROL")
        if path:
            import select
            self._poll = select.poll()
            # "r+b": read and write, so opening never waits for the harness to open its end,
            # and a harness gone leaves no end-of-file for poll to report at every call.
            self._poll.register(open(path, "r+b"), select.POLLIN)
        self.sched_overflows = 0  # edges whose soft IRQ was dropped (queue full)
        self.wdt_fed_ms = None
        self._fault_at = None
        self.full = None  # ticks_ms at which the flash fills up (firmware/hal/unix_faults.py)

    # --- time ------------------------------------------------------------------------------
    def sleep_ms(self, ms):
        # The Unix port does not run scheduled callbacks inside time.sleep (the ESP32 does, in
        # its event-poll hook). Sleep in poll() on the wake socket instead: the pulse thread
        # pokes it after scheduling an edge, poll returns, and the handler runs at the next
        # bytecode, as promptly as a soft IRQ on the board and with no busy waiting.
        # While in here the main thread is idle, as a board's in its sleep, where a soft IRQ runs
        # within microseconds of its edge: the pulse thread marks the edges it plays meanwhile,
        # and their handlers read the edge's own time, however late this host wakes the thread
        # (_irq). Without this a slow wake-up on a loaded host stamps a bounce past the debounce:
        # measured, 1 bounce in 2400 counted as a pulse in a chunk whose steps all took under
        # 0.2 ms (tests/e2e/test_e2e_bounce.py, 50 pulses/s, 12 ms).
        st = self._st
        st[_ASLEEP] = 1
        if self._poll is None:
            time.sleep_ms(ms)
            st[_ASLEEP] = 0
            return
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                st[_ASLEEP] = 0
                return
            # ipoll, not poll: poll() returns a new list at every call (on this port, several
            # per main-loop step); ipoll reuses one tuple for what it yields.
            for s, _ in self._poll.ipoll(left):
                if s is self._wake:
                    try:
                        while s.readinto(self._wake_buf):
                            pass
                    except OSError:
                        pass  # EAGAIN: drained
                else:
                    # The control FIFO: a file changed. One byte (a stream's readinto waits for
                    # as many as it is asked for; more wake the next ipoll), then the look, here
                    # while the loop sleeps: the next step sees the new state.
                    s.readinto(self._wake_buf, 1)
                    self._net_state = None
                    self._net()

    def epoch_ms(self, ms=None):
        """The RTC in Unix ms (the host's clock); epoch_ms(ms) sets it: NTP answers from the
        host's clock too, so there is nothing to set."""
        # time.time() is a float of µs resolution here; int() of it in ms is a small int on
        # this port, where time_ns() // 10**6 makes two big ints at every reading.
        return None if ms is not None else int(time.time() * 1000)

    def ntp_time(self, host):
        # The time server answers the host's clock, the true time (its packet checks,
        # firmware/sync.py, are tested on this port in tests/portable).
        if os.getenv("METER_NTP") == "fail" or self._net() != "up":
            return None
        return time.time_ns() // 1000000

    # --- identity, memory, flash -------------------------------------------------------------
    def unique_id(self):
        uid = os.getenv("METER_UID") or "a1b2c3d4e5f6"
        try:
            import binascii
            return binascii.unhexlify(uid)
        except ValueError:
            return uid.encode()

    def mem_free(self):
        gc.collect()  # free heap means reachable data only, not garbage awaiting collection
        return gc.mem_free()

    def mount(self):
        mount_flash(os.getenv("METER_FLASH") or "flash.img",
                    delay_ms=int(os.getenv("METER_FLASH_DELAY_MS") or 0), hal=self)
        os.chdir("/flash")

    # --- network -----------------------------------------------------------------------------
    def _net(self):
        # The files as of the last look (at boot, and after each byte on the control FIFO).
        if self._net_state is None:
            self._net_state = "up"
            if self._net_file is not None:
                try:
                    with open(self._net_file) as f:
                        self._net_state = f.read().strip() or "up"
                except OSError:
                    pass
            b = self._button
            if b[0]:
                try:
                    open(b[0]).close()  # a file object costs less than os.stat's tuple
                    b[1] = True
                except OSError:
                    b[1] = False
        if self._net_file is None:
            return "up"
        i = self._net_state.find("\n")
        return self._net_state if i < 0 else self._net_state[:i]  # the site's networks follow

    def wifi_connect(self, ssid, password):
        self._wifi_on = (ssid, password)

    def wifi_disconnect(self):
        self._wifi_on = False

    # With the site's networks scripted, joins are judged by firmware/hal/unix_ap.py (loaded
    # then only: normal operation here costs the heap it costs on the board).
    def wifi_connected(self):
        state = self._net()
        if "\n" in self._net_state:
            from firmware.hal import unix_ap
            return unix_ap.wifi_connected(self)
        return self._wifi_on and state != "down"

    def wifi_status(self):
        state = self._net()
        if "\n" in self._net_state:
            from firmware.hal import unix_ap
            return unix_ap.wifi_status(self)
        return "access point not found" if state == "down" else "connected"

    def wifi_rssi(self):
        return -55 if self.wifi_connected() else None

    # --- pins --------------------------------------------------------------------------------
    def pulse_input(self, pin, pull_up, edge, handler, use_hw):
        import _thread
        self._handler = handler
        self._hw = _HwCounter(_thread.allocate_lock()) if use_hw else None
        path = os.getenv("METER_PULSES")
        if path:
            self._open_doorbell()
            _thread.start_new_thread(self._feed, (path,))
        return self._hw

    def _irq(self, i):
        # The soft IRQ, in the main thread: the handler's ticks_us reads the edge's own time
        # plus how long this callback waited in the queue (see Pulses at the top). i: the
        # edge's slot in _st.
        # Never earlier than the previous handler read it: on a board, handlers run one after
        # the other and each reads the clock as it runs. Here an edge the thread played later
        # than the one before it (preempted between the two) would read earlier than that
        # one's handler did, when both run back to back: an edge that goes back in time, a
        # bounce to any debounce, even with none (a gap below 0 ms; measured: 1 pulse in 1234
        # lost now and then on a loaded host, tests/e2e/test_e2e_boot.py). Kept relative
        # (the last handler's lateness and when it ended, on the port's own µs clock), so a
        # long silence cannot make an old stamp read as recent.
        # An edge played while the main thread slept (sleep_ms) is handled at its own time:
        # what its handler waited for was this host waking the thread, not the firmware.
        late = self._st
        now = time.ticks_us()
        lag = late[i]
        if late[_PLAYED + i] >= 0:
            lag -= time.ticks_diff(now, late[_PLAYED + i])
        floor = late[_PREV_LATE] - time.ticks_diff(now, late[_PREV_US])
        if lag < floor <= 0:
            lag = floor
        late[_RING] = lag
        late[_PREV_LATE] = lag
        self._handler(None)
        late[_RING] = 0
        late[_PREV_US] = time.ticks_us()  # after the handler: later than anything it read

    def _open_doorbell(self):
        import random
        import select
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        for _ in range(50):  # no getsockname() on this port: pick a free port ourselves
            addr = _socket.getaddrinfo("127.0.0.1", 20000 + random.getrandbits(15))[0][-1]
            try:
                s.bind(addr)
                break
            except OSError:
                continue
        s.setblocking(False)
        self._wake, self._wake_addr = s, addr
        if self._poll is None:
            self._poll = select.poll()
        self._poll.register(s, select.POLLIN)

    def _feed(self, path):
        # Runs in its own thread, like the pulse hardware: keeps counting while the main thread
        # is blocked in a TLS handshake or a flash write. Nothing here allocates per edge.
        rec = bytearray(_EDGE_REC)  # MicroPython's readinto waits for a full record
        hw = self._hw
        lock = hw.lock if hw is not None else None
        irq = self._irq  # bound once: scheduling it per edge allocates nothing
        late = self._st
        tus = time.ticks_us
        bell = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        addr = self._wake_addr
        slot = 0
        played = None  # the last edge's time
        # Edges from before the pulse input existed (written while this process started: a
        # second or more on a loaded host) never reached a board's PCNT either, which is not
        # configured yet; played now, in one burst, they would be edges 0.5 s apart counted
        # within microseconds, which no wire gives. They are left out, and the harness told
        # (lab/meterhost.py: pulses lost while the power was off, in effect).
        start = tus() & _EDGE_MASK
        early = [0, 0]  # real pulses, noise edges
        while True:
            with open(path, "rb") as f:  # blocks until the load driver opens the FIFO
                while f.readinto(rec):
                    t = rec[0] | rec[1] << 8 | rec[2] << 16 | (rec[3] & 0x3F) << 24
                    if early is not None:
                        if ((t - start + _EDGE_HALF) & _EDGE_MASK) < _EDGE_HALF:
                            early[1 if rec[3] & 0x80 else 0] += 1
                            continue
                        if early[0] or early[1]:
                            print("hal: %d pulses and %d noise edges came before the pulse"
                                  " input was set up: not counted" % (early[0], early[1]))
                        early = None
                    # Differences of edge times (30 bits, wrapping every 17.9 min): small ints
                    # on any build.
                    if played is not None and ((t - played + _EDGE_HALF) & _EDGE_MASK) < _EDGE_HALF:
                        t = played  # edges never go back in time
                    played = t
                    wait = ((t - (tus() & _EDGE_MASK) + _EDGE_HALF) & _EDGE_MASK) - _EDGE_HALF
                    if wait > 0:
                        time.sleep_us(wait if wait < _AHEAD_MAX_US else _AHEAD_MAX_US)
                    if lock is not None:
                        lock.acquire()
                        hw.total += 1
                    wait = ((t - (tus() & _EDGE_MASK) + _EDGE_HALF) & _EDGE_MASK) - _EDGE_HALF
                    late[slot] = wait if wait < 0 else 0
                    late[_PLAYED + slot] = tus() if late[_ASLEEP] else -1
                    try:
                        micropython.schedule(irq, slot)
                        slot = slot + 1 if slot + 1 < _RING else 0
                    except RuntimeError:
                        self.sched_overflows += 1  # as on ESP32: the soft IRQ is lost
                    if lock is not None:
                        lock.release()
                    try:
                        bell.sendto(b".", addr)  # wake the main thread if it sleeps
                    except OSError:
                        pass

    def led_setter(self, pin, inverted):
        return None  # pattern changes are logged by StatusLed

    def boot_button_held(self, pin=None):
        # Is the button down now (never waits)? The file's presence is the press, looked at
        # with the network file (_net, METER_CONTROL).
        if pin is None or not self._button[0]:
            return False
        self._net()
        return self._button[1]

    # --- watchdog, reset -----------------------------------------------------------------------
    def wdt_start(self, timeout_ms):
        self.wdt_fed_ms = time.ticks_ms()
        fault = os.getenv("METER_FAULT_MS")
        self._fault_at = time.ticks_add(self.wdt_fed_ms, int(fault)) if fault else None

    def wdt_feed(self):
        self.wdt_fed_ms = time.ticks_ms()
        if self.full is not None and time.ticks_diff(self.wdt_fed_ms, self.full) >= 0:
            # Between main-loop steps, never inside a flash operation; unix_faults.py again only
            # for this, as in mount_flash.
            import sys
            __import__(_FAULTS)
            delattr(sys.modules["firmware.hal"], _FAULTS[13:])
            sys.modules.pop(_FAULTS).fill(self)
        if self._fault_at is not None and time.ticks_diff(self.wdt_fed_ms, self._fault_at) >= 0:
            self._fault_at = None
            raise RuntimeError("injected fault (METER_FAULT_MS)")

    def reset(self):
        sys.exit(RESET_EXIT_CODE)

    def reset_cause(self):
        return int(os.getenv("METER_RESET") or 0)

    def idf_heap(self):
        return None  # no IDF heap beside MicroPython's on this port
