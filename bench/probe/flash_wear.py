# Flash wear per record write for bench, on the MicroPython Unix port. A 2-minute run at
# default settings holds too few writes to see an erase: LittleFS erases a block only when a
# metadata log fills up. So the way each kind writes its running total is repeated N times on a
# 2 MiB LittleFS image (firmware/hal/unix.py's block device) that holds what a meter's flash
# holds, and block programs and erases are counted at the block device:
#   firmware  firmware/store.py Store.write("pulses", {"index": n})  (tmp file, then rename)
#   baseline  bench/baseline/naive.py save("total.json", n)          (rewritten in place)
#   micropython flash_wear.py IMAGE firmware|baseline N  ->  "WEAR <kind> <programs> <erases> <N>"

import json
import os
import sys
import time

from firmware.hal import unix

counts = [0, 0]
_write, _ioctl = unix.FileBlockDev.writeblocks, unix.FileBlockDev.ioctl


def writeblocks(self, n, buf, off=0):
    counts[0] += 1
    _write(self, n, buf, off)


def ioctl(self, op, arg):
    if op == 6:
        counts[1] += 1
    return _ioctl(self, op, arg)


unix.FileBlockDev.writeblocks = writeblocks
unix.FileBlockDev.ioctl = ioctl


def main(image, kind, n):
    unix.mount_flash(image)
    os.chdir("/flash")
    with open("config.json", "w") as f:
        f.write(json.dumps({"k%02d" % i: "value-%032d" % i for i in range(16)}))  # ~900 bytes
    if kind == "firmware":
        from firmware.log import Log
        from firmware.store import Store
        store = Store(Log(time.ticks_ms, lambda line: None))
        store.write("creds", {"type": "ACCESS_TOKEN", "token": "x" * 20})
        store.write("attrs", {"hash": "0" * 32})

        def write(k):
            store.write("pulses", {"index": 12345678 + k})
    else:
        import naive
        naive.save("token.json", "x" * 20)
        naive.save("attributes.json", True)

        def write(k):
            naive.save("total.json", 12345678 + k)
    write(0)
    counts[0] = counts[1] = 0
    for k in range(1, n + 1):
        write(k)
    print("WEAR %s %d %d %d" % (kind, counts[0], counts[1], n))


main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
