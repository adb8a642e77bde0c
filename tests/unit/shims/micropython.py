# CPython stand-in for the parts of MicroPython's `micropython` module that firmware/ uses.
# Only on the path of the CPython unit tests; the Unix-port tests use the real module.


def const(x):
    return x


def schedule(func, arg):
    func(arg)
