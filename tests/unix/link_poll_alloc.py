# On the MicroPython Unix port: the real umqtt.simple opens a session to the server at
# 127.0.0.1:<argv[1]> through firmware.link, then link.poll() runs 1000 times on the idle
# session with the collector off. Prints "POLL ALLOC <bytes>" (the firmware's promise: 0).

import gc
import socket
import sys
import time

from umqtt import simple

from firmware.link import Link


class Log:
    def warn(self, *a):
        print(*a)

    info = error = warn


link = Link(simple, socket, time.ticks_ms, time.ticks_diff, Log())
rc = link.open("127.0.0.1", int(sys.argv[1]), "dev", "tok", "", 60)
assert rc == 0, rc
link.poll()


def measure(n):
    # In a function: a loop variable at module level would be a new global (a dict insert).
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(n):
        link.poll()
    after = gc.mem_alloc()
    gc.enable()
    return after - before


measure(10)
print("POLL ALLOC %d" % measure(1000))
print("CONNECTED %s" % link.connected)
link.close()
