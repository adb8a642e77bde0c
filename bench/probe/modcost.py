# Bench-only (bench/options.py): what importing modules costs, from .mpy files or from a
# ROMFS image, and what unloading one gives back.
#   MODCOST_MODULES=<module,...> micropython modcost.py <tree dir | image.romfs> [unload]
# (the list goes in the environment: this Unix build dies on a command-line argument of a few
# hundred characters, "FATAL: uncaught NLR")
# The modules are imported one after another (each measured: live bytes, interned names);
# with "unload", the last is then dropped from sys.modules and its package, as
# firmware.unload() does, and the heap it leaves behind (its interned names) is measured.
# A ROMFS image is read into one bytes object first (the Unix port has no memory outside the
# heap to map it from): its size is printed and is not part of any figure.
import gc
import os
import sys
import vfs

import micropython

src, mods = sys.argv[1], os.getenv("MODCOST_MODULES").split(",")
if src.endswith(".romfs"):
    with open(src, "rb") as f:
        img = f.read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
    sys.path.insert(1, "/rom/lib")
    gc.collect()
    print("MODCOST image %d" % len(img))
else:
    sys.path.insert(0, src)
    sys.path.insert(1, src + "/lib")


def live():
    gc.collect()
    return gc.mem_alloc()


for name in mods:
    a = live()
    micropython.qstr_info()
    __import__(name)
    b = live()
    micropython.qstr_info()
    print("MODCOST import %s %d" % (name, b - a))
if len(sys.argv) > 2:
    name = mods[-1]
    a = live()
    pkg, _, leaf = name.rpartition(".")
    sys.modules.pop(name)
    if pkg and leaf in sys.modules[pkg].__dict__:
        del sys.modules[pkg].__dict__[leaf]
    b = live()
    print("MODCOST unload %s %d" % (name, a - b))
