# Runs on the MicroPython Unix port: a 20-reading telemetry message built on a heap so
# fragmented that no free block exceeds a few hundred bytes (a meter after weeks of running).

import gc

from firmware.pulses import energy_text
from firmware.telemetry import Payload


def point(ts, index, power_dw, per_kwh):
    # One reading as its own string: the straightforward way, for the control below.
    return ('{"ts":%d,"values":{"energy_kwh":%s,"power_w":%d.%d,"pulses":%d}}' % (
        ts, energy_text(index, per_kwh), power_dw // 10, power_dw % 10, index)).encode()

payload = Payload()  # allocated at boot, as main.py does
readings = [(1795000000000 + i * 60000, 123456 + i, 15005) for i in range(20)]
# This script's own globals, made before the heap is fragmented: a new global later would grow
# the module's dict, a block as large as the ones this test shows are never needed.
mv = n = control_failed = i = None

# Fragment: fill the heap with 192-byte blocks, then free every other one.
gc.collect()
blocks = [None] * 1000  # preallocated: growing the list would itself need a large block
n_blocks = 0
# Every global exists before the heap is fragmented: a new one could grow the module's dict,
# and that is not what this measures.
i = 0
mv = n = data = control_failed = None
try:
    while n_blocks < 1000:
        blocks[n_blocks] = bytearray(192)
        n_blocks += 1
except MemoryError:
    pass
while i < n_blocks:
    blocks[i] = None
    i += 2
gc.collect()

# Control: the straightforward way needs ~2 KB in one piece, and fails here.
try:
    ("[" + ",".join(point(*r, 1000).decode() for r in readings) + "]").encode()
    control_failed = False
except MemoryError:
    control_failed = True

mv, n = payload.batch(readings, 1000)
blocks = None
gc.collect()
import json
data = json.loads(bytes(mv))
assert n == 20 and len(data) == 20 and data[-1]["values"]["pulses"] == 123475, (n, len(data))
assert control_failed, "the heap was not fragmented enough for the control to fail"
print("PAYLOAD OK: %d readings, %d bytes, on a fragmented heap" % (n, len(mv)))
