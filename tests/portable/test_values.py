# Values that would wrap silently on the board (issue 13 bug 7): array('l') and struct 'i'
# truncate on overflow without an error, and past 2**30 every value is a heap-allocated big int.
# Runs on CPython (pytest) and on the MicroPython Unix port (run.py).

import struct
from array import array

from firmware.pulses import energy_parts, energy_text
from firmware.readings import ReadingQueue
from firmware.telemetry import power_dw


def _reference(index, per_kwh):
    # The arithmetic as it was: exact, but index * 10**places is a big int past 2**30.
    c, places, twos, fives = per_kwh, 0, 0, 0
    while c % 10 == 0:
        c //= 10
        places += 1
    while c % 2 == 0:
        c //= 2
        twos += 1
    while c % 5 == 0:
        c //= 5
        fives += 1
    if c == 1:
        places += max(twos, fives)
        return divmod(index * 10 ** places // per_kwh, 10 ** places) + (places,)
    return divmod((index * 10 ** 9 + per_kwh // 2) // per_kwh, 10 ** 9) + (9,)


def test_energy_is_the_same_exact_decimal_for_any_index():
    indices = (0, 1, 7, 999, 1000, 1001, 1073741, 1073742, 1073741823, 1073741824, 2 ** 31 - 1,
               2 ** 31, 10 ** 12 + 3)
    for per_kwh in (1, 3, 7, 100, 250, 400, 500, 800, 1000, 1200, 1600, 2000, 3200, 6400, 7,
                    9999, 10000, 12800, 99991, 100000):
        for i in indices:
            assert energy_parts(i, per_kwh) == _reference(i, per_kwh), (i, per_kwh)
    assert energy_text(1074000000, 1000) == "1074000.000"  # past 2**30 pulses: still exact
    assert energy_text(2 * 10 ** 9 - 1, 3) == "666666666.333333333"
    assert energy_text(2, 3) == "0.666666667"  # rounded half up at the 9th place
    assert energy_text(999999999, 3) == "333333333.000000000"


def test_power_is_clamped_to_its_field():
    assert power_dw(123.44) == 1234 and power_dw(0.04) == 0
    for absurd in (1e8, 1e12, 1e300, float("inf")):
        assert power_dw(absurd) == 1000000000  # 100 MW, below 2**30 and 2**31
    for none in (0.0, -5.0, float("nan"), float("-inf")):
        assert power_dw(none) == 0
    # The largest value survives the RAM queue (array 'l', 32 bits on the board) and the
    # flash record (struct "<qqi") unchanged.
    q = ReadingQueue(2)
    q.push(1795000000000, 5, power_dw(1e20))
    assert q.peek(1) == [(1795000000000, 5, 1000000000)]
    rec = struct.pack("<qqi", 1795000000000, 5, power_dw(1e20))
    assert struct.unpack("<qqi", rec)[2] == 1000000000
    assert array("l", [power_dw(1e20)])[0] == 1000000000
