# Simulated-meter flash images (LittleFS2, as firmware/hal/unix.py mounts them).
# Runs under the MicroPython Unix port, so the image is read and written by the same LittleFS
# code as the meter's:
#   micropython lab/flashimg.py IMAGE put HOSTFILE [NAME]   copy a host file in (atomically)
#   micropython lab/flashimg.py IMAGE get NAME              print a file's bytes to stdout
#   micropython lab/flashimg.py IMAGE ls                    list files, recursively
#   micropython lab/flashimg.py IMAGE rm NAME
# Exit status 2 when a file to get is absent.

import os
import sys

from firmware.hal.unix import mount_flash


def _walk(d):
    for name, kind, *_ in os.ilistdir(d):
        p = d + "/" + name if d != "." else name
        if kind == 0x4000:
            yield from _walk(p)
        else:
            yield p, os.stat(p)[6]


def main(argv):
    image, cmd = argv[1], argv[2]
    if cmd == "put":
        with open(argv[3], "rb") as f:  # a host path: read before /flash is the cwd
            data = f.read()
    mount_flash(image)
    os.chdir("/flash")
    if cmd == "put":
        name = argv[4] if len(argv) > 4 else argv[3].split("/")[-1]
        if "/" in name:
            try:
                os.mkdir(name.rsplit("/", 1)[0])
            except OSError:
                pass
        with open(name + ".tmp", "wb") as f:
            f.write(data)
        os.rename(name + ".tmp", name)
    elif cmd == "get":
        try:
            with open(argv[3], "rb") as f:
                sys.stdout.buffer.write(f.read())
        except OSError:
            sys.exit(2)
    elif cmd == "ls":
        for p, size in _walk("."):
            print("%8d %s" % (size, p))
    elif cmd == "rm":
        os.remove(argv[3])
    else:
        sys.exit("unknown command " + cmd)


main(sys.argv)
