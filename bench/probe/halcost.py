# Bench-only (bench/breakdown.py): the import cost of one HAL module on this port.
#   micropython halcost.py unix|esp32     (MICROPYPATH: the device tree and its lib/)
# esp32.mpy needs `network` and `esp32`, which the Unix port lacks: a stand-in with the constants it reads
# at import time is put in sys.modules first and not counted (on a board, network and machine
# are built in: their names are in ROM).
import gc
import sys

import micropython

import firmware.hal  # noqa: F401  (the package: not counted)

hal = sys.argv[1]
if hal == "esp32":
    class network:  # noqa: N801  (stands in for the module)
        STA_IF = 0
        STAT_IDLE = 1000
        STAT_CONNECTING = 1001
        STAT_WRONG_PASSWORD = 202
        STAT_NO_AP_FOUND = 201
        STAT_GOT_IP = 1010
    sys.modules["network"] = network

    class esp32:  # noqa: N801  (stands in for the module: read at call time only)
        HEAP_DATA = 4
    sys.modules["esp32"] = esp32
    import machine  # noqa: F401
    import socket  # noqa: F401
    import ssl  # noqa: F401
gc.collect()
a = gc.mem_alloc()
micropython.qstr_info()
if hal == "esp32":
    import firmware.hal.esp32  # noqa: F401
else:
    import firmware.hal.unix  # noqa: F401
gc.collect()
b = gc.mem_alloc()
micropython.qstr_info()
print("HALCOST %d" % (b - a))
