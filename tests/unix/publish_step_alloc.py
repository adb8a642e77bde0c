# On the MicroPython Unix port: the reading pipeline as firmware/wiring.py builds it, on the
# Unix HAL, publishing through the real firmware.link and umqtt.simple to a server at
# 127.0.0.1:<argv[1]> that acknowledges every PUBLISH. One pulse a second (the HAL's counter
# and the interrupt handler, as its pulse thread plays them), a reading every 2 s. The HAL has
# the simulator's network and BOOT button files and its control FIFO (METER_NET, METER_BUTTON,
# METER_CONTROL, made by the test as lab/meterhost.py makes them), and each step reads them as
# Supervisor.step does. With the collector off, every main-loop step's gc.mem_alloc() growth
# is counted, and every sleep's, once 3 readings were acknowledged. Prints
# "PUBLISH ALLOC <median> <largest> <steps>" for the publishing steps, "IDLE ALLOC <bytes>
# <steps>" for the steps that neither published nor had a pulse, "CYCLE ALLOC <median>
# <cycles>" for whole 2 s cycles (every step and sleep after one publishing step up to the
# end of the next) and "SLEEP ALLOC <bytes> <sleeps>" for the sleeps. Then the files are
# changed, and what the HAL reads of them: "CONTROL <state> <state> <held> <held>" (see the end).

import gc
import os
import sys

from umqtt import simple

from firmware import config, wiring
from firmware.hal.unix import Hal
from firmware.link import Link
from firmware.log import Log
from firmware.telemetry import Payload


class Store:
    # In RAM: the pipeline reads the index once at start and writes it every persist_interval_s
    # (an hour here: no write is counted).
    errors = 0

    def read(self, name):
        return None

    def write(self, name, value):
        return True


os.chdir(os.getenv("PORTABLE_TMP"))  # the backlog looks for chunk files left on "flash" here
hal = Hal()
hal.wifi_connect("net", "password")
log = Log(hal.ticks_ms)
cfg, errors = config.validate({
    "wifi_ssid": "net", "wifi_password": "password", "tb_host": "127.0.0.1",
    "tb_port": int(sys.argv[1]), "tb_tls": False, "tb_plain_ok": True, "access_token": "tok",
    "supplier_key": "key", "cups": "ES0031000000000001BJ0F", "pulse_pin": 4,
    "publish_interval_s": 2, "persist_interval_s": 3600, "health_interval_s": 0})
assert not errors, errors
payload = Payload()
pipeline = wiring.reading_pipeline(hal, log, Store(), cfg, payload, lambda: 0.5)
pipeline._clock.synced = True  # readings carry the host's time (firmware/sync.py sets this)
link = Link(simple, hal.socket, hal.ticks_ms, hal.ticks_diff, log)
assert link.open("127.0.0.1", int(sys.argv[1]), "dev", "tok", "", 60) == 0
pipeline.start(hal.ticks_ms())
pulses = pipeline.pulses
hw = pulses.hw
published = [0] * 8
cycles = [0] * 8
idle = [0, 0]  # bytes, steps
sleeps = [0, 0]  # bytes, sleeps


def step(now):
    # Supervisor.step's pipeline part and the HAL inputs it reads at every step, and the run
    # state's (firmware/supervisor.py).
    if pipeline._clock.tick(now):
        pipeline.tick(now)
    pipeline.service(now)
    hal.boot_button_held(cfg["boot_button_pin"])
    if hal.wifi_connected():
        link.poll()
        pipeline.send(link, now)


def run(seconds):
    # In a function: loop variables at module level would be globals (a dict insert).
    n = 0
    cycle = -1  # bytes since the last publishing step ended (counted from the fourth on)
    edge_ms = hal.ticks_ms()
    end = hal.ticks_add(edge_ms, seconds * 1000)
    while hal.ticks_diff(end, hal.ticks_ms()) > 0 and n < 8:
        now = hal.ticks_ms()
        edge = hal.ticks_diff(now, edge_ms) >= 1000
        if edge:
            edge_ms = now
            hw.total += 1  # the pulse thread: the counter, then the handler (firmware/hal/unix.py)
            pulses.edge(None)
        before = pipeline.published
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        step(now)
        b = gc.mem_alloc()
        gc.enable()
        if cycle >= 0:
            cycle += b - a
        if pipeline.published > before:
            if before >= 3:
                published[n] = b - a
                if cycle >= 0:
                    cycles[n] = cycle
                n += 1
                cycle = 0
        elif not edge and before >= 3:
            idle[0] += b - a
            idle[1] += 1
        # The main loop's sleep (Supervisor.run_forever), where the HAL waits on its control
        # FIFO: a cycle's bytes too.
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        hal.sleep_ms(50)
        b = gc.mem_alloc()
        gc.enable()
        if cycle >= 0:
            cycle += b - a
            sleeps[0] += b - a
            sleeps[1] += 1
    return n


def _replace(path, text):
    # As lab/meterhost.py writes them: a whole new file, renamed over the old one.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def _ring():
    with open(os.getenv("METER_CONTROL"), "wb") as f:
        f.write(b".")


n = run(60)
assert n >= 6, n
v = sorted(published[:n])
print("PUBLISH ALLOC %d %d %d" % (v[n // 2], v[-1], n))
print("IDLE ALLOC %d %d" % (idle[0], idle[1]))
v = sorted(cycles[1:n])  # the first publishing step counted opens the first cycle
print("CYCLE ALLOC %d %d" % (v[len(v) // 2], len(v)))
print("SLEEP ALLOC %d %d" % (sleeps[0], sleeps[1]))
link.close()

# The Wi-Fi lost and the button pressed, the files changed as the harness changes them: not
# looked at until the control FIFO says so, then seen after one sleep of the main loop.
_replace(os.getenv("METER_NET"), "down")
_replace(os.getenv("METER_BUTTON"), "")
hal.sleep_ms(50)
seen = [hal.wifi_status(), hal.boot_button_held(cfg["boot_button_pin"])]
_ring()
hal.sleep_ms(50)
print("CONTROL %s %s %d %d" % (seen[0].replace(" ", "_"), hal.wifi_status().replace(" ", "_"),
                               seen[1], hal.boot_button_held(cfg["boot_button_pin"])))
