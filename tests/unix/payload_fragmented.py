# Runs on the MicroPython Unix port: a 20-reading telemetry message built on a heap so
# fragmented that no free block exceeds a few hundred bytes (a meter after weeks of running).

import gc

from firmware.telemetry import Payload, point

payload = Payload()  # allocated at boot, as the Meter does
readings = [(1795000000000 + i * 60000, 123456 + i, 15005) for i in range(20)]

# Fragment: fill the heap with 192-byte blocks, then free every other one.
gc.collect()
blocks = [None] * 1000  # preallocated: growing the list would itself need a large block
n_blocks = 0
try:
    while n_blocks < 1000:
        blocks[n_blocks] = bytearray(192)
        n_blocks += 1
except MemoryError:
    pass
i = 0
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
