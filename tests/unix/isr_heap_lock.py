# Runs on the MicroPython Unix port: the pulse interrupt handler under micropython.heap_lock().
# Any allocation in the handler raises MemoryError and fails the run.

import os
import time

import micropython
from firmware.pulses import PulseCounter

from firmware.hal.unix import Hal

# The ticks the handler calls in the virtual meters: the Unix HAL's (its ticks_us reads an edge's
# own time while that edge's handler runs). With METER_TICKS_WRAP_MS, its ESP32 emulation (2**30
# period), as in the end-to-end tests; otherwise the port's own period.
hal = Hal()
sleep_ms = time.sleep_ms
port_us = time.ticks_us  # the port's own clock, which the pulse thread's marks read
time = hal  # noqa: F811  (ticks_us, ticks_ms, ticks_diff: the same names)


def control():
    # heap_lock must catch what the handler is forbidden to do (a float, a list append).
    def bad_float(n):
        return n * 1.5

    def bad_list(n):
        return [n]

    for bad in (bad_float, bad_list):
        micropython.heap_lock()
        try:
            bad(3)
            caught = False
        except MemoryError:
            caught = True
        micropython.heap_unlock()
        assert caught, "heap_lock did not catch %s" % bad.__name__


def run(min_ms, n):
    p = PulseCounter(time.ticks_us, time.ticks_diff, 1000, min_ms, 300)
    edge = p.edge  # what Pin.irq holds: the bound method cached at construction
    micropython.heap_lock()
    try:
        for _ in range(n):
            edge(None)
    finally:
        micropython.heap_unlock()
    p.service(time.ticks_ms())
    return p


control()
p = run(0, 10000)  # every edge accepted
assert p.index == 10000, p.index
p = run(1000, 10000)  # all but the first rejected by the debounce (another path)
assert p.index == 1 and p.rejected == 9999, (p.index, p.rejected)
# Interleaved with drains, as in the meter: the handler keeps running between service() calls.
p = PulseCounter(time.ticks_us, time.ticks_diff, 1000, 0, 300)
edge = p.edge
total = 0
for _ in range(100):
    micropython.heap_lock()
    for _ in range(100):
        edge(None)
    micropython.heap_unlock()
    total += p.service(time.ticks_ms())
assert total == 10000 and p.index == 10000

# Bounce right after a drain: rejected into an empty half (the train's tail, counted apart).
p = PulseCounter(time.ticks_us, time.ticks_diff, 1000, 1000, 300)
edge = p.edge
edge(None)
for _ in range(100):
    p.service(time.ticks_ms())
    micropython.heap_lock()
    for _ in range(100):
        edge(None)
    micropython.heap_unlock()
p.service(time.ticks_ms())
assert p.index == 1 and p.rejected == 10000 and p.bounced_edges == 10000, (p.index, p.rejected)


class Hw:
    # A hardware counter; `between` edges arrive between the two takes of the next drain.
    def __init__(self):
        self.count = 0
        self.between = 0
        self._second = False

    def take(self):
        self._second = not self._second
        if not self._second and self.between:
            self.count += self.between
            self.between = 0
        n = self.count
        self.count = 0
        return n


# The drain on the hardware-counter path: a chunk counted in pulse trains (30 edges counted,
# none judged: 10 closures that bounced twice) and a deferred one (an edge counted while the
# drain waited) allocate nothing either (main loop, every step).
hw = Hw()
p = PulseCounter(time.ticks_us, time.ticks_diff, 1000, 15, 300, hw)
edge = p.edge


def train():
    hw.count += 3
    for _ in range(3):
        edge(None)


for _ in range(20):
    train()
    p.service(time.ticks_ms())  # trusted: the handler saw every edge (power computed here)
    sleep_ms(20)
p.service(time.ticks_ms())
micropython.heap_lock()
try:
    for _ in range(10):
        sleep_ms(170)  # room for 10 closures at the debounce spacing
        hw.count += 30
        p.service(time.ticks_ms())  # 30 edges the handler never saw: 10 trains of 3
        p.idle()
        sleep_ms(20)
        hw.between = 1
        assert p.service(time.ticks_ms()) == 0  # deferred: an edge counted meanwhile
        train()
        p.service(time.ticks_ms())
        p.idle()
finally:
    micropython.heap_unlock()
assert p.index == 20 + 10 * (10 + 1), p.index

# The soft IRQ as the Unix HAL delivers it (its pulse thread schedules hal._irq with the edge's
# slot): the handler stamps the edge's own time, not when a loaded host got round to playing it.
# A closure, then its bounce 3 ms later that the thread played 25 ms late: still a bounce.
p = PulseCounter(hal.ticks_us, hal.ticks_diff, 1000, 15, 300)
hal.pulse_input(None, True, None, p.edge, False)  # no METER_PULSES: no thread, only _irq
micropython.heap_lock()
try:
    for _ in range(5):
        hal._st[2] = 0
        hal._irq(2)
        sleep_ms(28)
        hal._st[3] = -25000
        hal._irq(3)
        sleep_ms(40)  # the next closure: 68 ms after this one, 43 after its bounce was played
finally:
    micropython.heap_unlock()
p.service(hal.ticks_ms())
assert p.index == 5 and p.rejected == 5, (p.index, p.rejected)
assert hal._st[16] == 0  # outside a handler, ticks_us reads the clock itself (_RING)

# Edges microseconds apart on the wire, the second played 5 ms later than the first (the thread
# preempted between the two), their handlers back to back: the second must not read the clock
# earlier than the first did, an edge going back in time, which even no debounce takes for
# bounce. Every one of them is a pulse.
p = PulseCounter(hal.ticks_us, hal.ticks_diff, 1000, 0, 300)
hal.pulse_input(None, True, None, p.edge, False)
micropython.heap_lock()
try:
    for _ in range(50):
        hal._st[2] = 0
        hal._irq(2)
        hal._st[3] = -5000
        hal._irq(3)
        sleep_ms(1)
finally:
    micropython.heap_unlock()
p.service(hal.ticks_ms())
assert p.index == 100 and p.rejected == 0, (p.index, p.rejected)
# A bounce 5 ms after its closure, played on time to a main thread asleep in sleep_ms, whose
# handler this host got round to 10 ms later (a loaded host waking the thread late): stamped at
# its edge's time, so still a bounce, as a board's idle soft IRQ would judge it, not a pulse
# 15 ms after the closure, past the 12 ms debounce. (The pulse thread marks edges so:
# _st[20 + slot], the port's ticks_us when it played the edge.)
p = PulseCounter(hal.ticks_us, hal.ticks_diff, 1000, 12, 300)
hal.pulse_input(None, True, None, p.edge, False)
micropython.heap_lock()
try:
    for _ in range(5):
        hal._st[2] = 0
        hal._irq(2)
        sleep_ms(5)
        hal._st[3] = 0
        hal._st[20 + 3] = port_us()
        sleep_ms(10)
        hal._irq(3)
        sleep_ms(30)
finally:
    micropython.heap_unlock()
hal._st[20 + 3] = -1
p.service(hal.ticks_ms())
assert p.index == 5 and p.rejected == 5, (p.index, p.rejected)
print("ISR OK: 40000 edges under heap_lock, 0 bytes allocated; hardware-path drain too;"
      " soft IRQs stamped at their edges' time, never earlier than the handler before, at once"
      " when played to a sleeping main thread")
