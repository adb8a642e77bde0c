# Bench launcher (bench): stands in for main.py on a measured meter. The probe's own heap
# (its code and state) is measured first, so that every heap figure can leave it out.
# BENCH_HEAPMAP=1 runs the heap breakdown (heapmap), BENCH_ALLOCTRACE=1 the allocation trace
# (alloctrace), instead of the figures probe.
import gc
import os

gc.collect()
_before = gc.mem_alloc()
if os.getenv("BENCH_HEAPMAP"):
    import heapmap as probe  # noqa: E402
elif os.getenv("BENCH_ALLOCTRACE"):
    import alloctrace as probe  # noqa: E402
else:
    import probe  # noqa: E402

gc.collect()
probe.run(gc.mem_alloc() - _before)
