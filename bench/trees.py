"""Device trees for `make bench`, built fresh under build/bench/ at every run.

    device            the firmware as deployed (tools/build_device.py)
    device-probe      the same, with bench/probe as main.py and the real main.py as meter_main.py
    baseline          bench/baseline (naive.py compiled, main.py as source) on the same board HAL
                      and umqtt.simple
    baseline-probe    the baseline under bench/probe

Everything that the firmware ships compiled (.mpy) is compiled here the same way, so that heap
figures compare like with like: main.py is source in every tree, as on the board.
"""

import os
import shutil
import subprocess

from tools.build_device import MPY_CROSS, ROOT, build

BENCH_BUILD = os.path.join(ROOT, "build", "bench")
BENCH_SRC = os.path.join(ROOT, "bench")


def _compile(src, dst, name):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    subprocess.run([MPY_CROSS, "-O2", "-s", name, "-o", dst, src], check=True)


def _copy_tree(src, dst, only=None):
    for dirpath, _dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for f in files:
            path = os.path.normpath(os.path.join(rel, f))
            if only is None or path in only:
                os.makedirs(os.path.join(dst, rel), exist_ok=True)
                shutil.copyfile(os.path.join(dirpath, f), os.path.join(dst, path))


def build_trees(out=BENCH_BUILD):
    """Build the four trees; returns {name: directory}."""
    shutil.rmtree(out, ignore_errors=True)
    device = os.path.join(out, "device")
    build(device)
    # The board HAL and umqtt.simple, for the baseline (it uses nothing else of firmware/).
    board = {os.path.join("firmware", "__init__.mpy"), os.path.join("firmware", "hal", "__init__.mpy"),
             os.path.join("firmware", "hal", "unix.mpy"), os.path.join("lib", "umqtt", "__init__.mpy"),
             os.path.join("lib", "umqtt", "simple.mpy")}
    baseline = os.path.join(out, "baseline")
    _copy_tree(device, baseline, board)
    _compile(os.path.join(BENCH_SRC, "baseline", "naive.py"),
             os.path.join(baseline, "lib", "naive.mpy"), "naive.py")
    shutil.copyfile(os.path.join(BENCH_SRC, "baseline", "main.py"), os.path.join(baseline, "main.py"))

    trees = {"device": device, "baseline": baseline}
    for name, src in (("device-probe", device), ("baseline-probe", baseline)):
        d = os.path.join(out, name)
        _copy_tree(src, d)
        if name == "device-probe":
            os.replace(os.path.join(d, "main.py"), os.path.join(d, "meter_main.py"))
        for probe in ("probe", "heapmap", "alloctrace"):
            _compile(os.path.join(BENCH_SRC, "probe", probe + ".py"),
                     os.path.join(d, "lib", probe + ".mpy"), probe)  # the module's name: one name
        shutil.copyfile(os.path.join(BENCH_SRC, "probe", "main.py"), os.path.join(d, "main.py"))
        trees[name] = d
    return trees
