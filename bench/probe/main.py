# Bench launcher (bench): stands in for main.py on a measured meter, which it then runs
# (meter_main.py, the real main.py). BENCH_PROBE names the probe module: probe (the figures),
# heapmap (the heap breakdown) or alloctrace (the allocation trace). The probe's own heap (its
# code and state) is measured first, so that every heap figure can leave it out, and so are
# its names: the two qstr_info lines around the import (bench/heap.py: BENCH probe_names).
# This file is compiled at every start and each of its names interned: it uses only names
# MicroPython has in ROM (start, run, ...; probe.py says why).
import gc
import os
import sys

import micropython

micropython.qstr_info()
gc.collect()
start = gc.mem_alloc()
run = __import__(os.getenv("BENCH_PROBE")).run
gc.collect()
micropython.qstr_info()
run(gc.mem_alloc() - start, sys.path[0] + "/meter_main.py")
