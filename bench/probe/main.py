# Bench launcher (bench): stands in for main.py on a measured meter. The probe's own heap
# (its code and state) is measured first, so that every heap figure can leave it out.
import gc

gc.collect()
_before = gc.mem_alloc()
import probe  # noqa: E402

gc.collect()
probe.run(gc.mem_alloc() - _before)
