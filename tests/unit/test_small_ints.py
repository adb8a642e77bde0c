"""Energy formatting stays in MicroPython's small ints on the ESP32 (issue 13 bug 7).

On the board an int is a small int (no heap) only below 2**30; above, every arithmetic result is
a big int on the heap. energy_parts() runs for every reading, so it must never produce one for
any pulse index a meter can reach (2**30 pulses: a million kWh at 1000 imp/kWh). CPython has no
such limit, so the index is passed as an int whose every arithmetic result is checked."""

import pytest

from firmware.pulses import energy_parts

SMALL = 1 << 30


class Watched(int):
    """An int that fails the test when any value derived from it reaches 2**30."""

    def _wrap(self, v):
        if isinstance(v, tuple):
            return tuple(self._wrap(x) for x in v)
        assert -SMALL <= v < SMALL, "big int on the ESP32: %d" % v
        return Watched(v)

    def _op(name):
        def f(self, *other):
            return self._wrap(getattr(int, name)(int(self), *(int(o) for o in other)))
        return f

    for _n in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
               "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__divmod__",
               "__rdivmod__", "__pow__", "__neg__"):
        locals()[_n] = _op(_n)
    del _n, _op


@pytest.mark.parametrize("per_kwh", [1, 3, 100, 250, 800, 1000, 1200, 1600, 2000, 3200, 6400,
                                     10000, 12800, 99991, 100000])
@pytest.mark.parametrize("index", [0, 1073741, 1073742, 123456789, SMALL - 1])
def test_energy_parts_never_leaves_small_ints(index, per_kwh):
    energy_parts(Watched(index), per_kwh)


def test_the_watch_catches_the_old_arithmetic():
    with pytest.raises(AssertionError, match="big int"):
        Watched(1073742) * 1000  # index * 10**places past 1074 kWh at 1000 imp/kWh
