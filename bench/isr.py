"""isr_alloc_bytes: bench/probe/isr_alloc.py on the Unix port, against the bench trees."""

import os
import subprocess

from bench.trees import BENCH_SRC
from lab.meterhost import MICROPYTHON


def isr_alloc(trees):
    path = ":".join([trees["device"], os.path.join(trees["baseline"], "lib"),
                     os.path.join(trees["device"], "lib"), ".frozen"])
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=2M",
                        os.path.join(BENCH_SRC, "probe", "isr_alloc.py")],
                       env=dict(os.environ, MICROPYPATH=path), capture_output=True, text=True,
                       timeout=60)
    if r.returncode:
        raise RuntimeError("isr_alloc.py: " + r.stdout + r.stderr)
    got = {}
    for line in r.stdout.splitlines():
        _, name, total, _calls = line.split()
        got[name] = int(total)
    if got.get("control", 0) <= 0:
        raise RuntimeError("isr_alloc.py: the control handler allocated nothing; the method is broken")
    return {"firmware": {"isr_alloc_bytes": max(got["firmware_accept"], got["firmware_debounce"])},
            "baseline": {"isr_alloc_bytes": got["baseline"]}}
