# isr_alloc_bytes for bench, on the MicroPython Unix port: what the pulse interrupt handler
# allocates, measured with gc.mem_alloc around 10000 calls with the collector off. The firmware's
# handler (firmware/pulses.py PulseCounter.edge) is measured with every edge accepted and with
# every edge but the first rejected by the debounce; the baseline's is bench/baseline/naive.py.
# Prints "ISR <name> <bytes over all calls> <calls>".

import gc
import time

N = 10000


def measure(handler):
    handler(None)  # first call outside the count
    i = 0  # a while loop with a small int: a for loop would allocate its iterator
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    while i < N:
        handler(None)
        i += 1
    b = gc.mem_alloc()
    gc.enable()
    return b - a


def main():
    # Control: a handler doing what a handler must not (a float) has to show up.
    print("ISR control %d %d" % (measure(lambda _pin: time.ticks_us() * 1.5), N))
    from firmware.pulses import PulseCounter
    for name, min_ms in (("firmware_accept", 0), ("firmware_debounce", 1000)):
        p = PulseCounter(time.ticks_us, time.ticks_diff, 1000, min_ms, 300)
        print("ISR %s %d %d" % (name, measure(p.edge), N))
    import naive
    print("ISR baseline %d %d" % (measure(naive.on_pulse), N))


main()
