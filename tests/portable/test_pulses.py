from firmware.pulses import PulseCounter, energy_text
from support import Clock

C = 1000


def _counter(clock, min_ms=15, hw=None, per_kwh=C, zero_s=300):
    return PulseCounter(clock.ticks_us, clock.ticks_diff, per_kwh, min_ms, zero_s, hw)


def _edge_at(clock, p, gap_us):
    clock.advance_us(gap_us)
    p.edge(None)


def test_debounce_truth_table():
    clk = Clock(5_000_000)
    p = _counter(clk, min_ms=15)
    p.edge(None)  # first edge ever: accepted
    _edge_at(clk, p, 14_999)  # 15 ms - 1 µs after the last accepted edge: rejected
    _edge_at(clk, p, 1)  # exactly 15 ms after the last *accepted* edge: accepted
    _edge_at(clk, p, 10_000)  # bounce: rejected
    _edge_at(clk, p, 10_000)  # 20 ms after the last accepted one: accepted
    p.service(clk.ticks_ms())
    assert p.index == 3 and p.rejected == 2


def test_defaults_keep_s0_and_fast_led_meters():
    clk = Clock()
    p = _counter(clk)  # default 15 ms
    for _ in range(100):
        _edge_at(clk, p, 60_000)  # S0: 30 ms on + 30 ms off
    for _ in range(100):
        _edge_at(clk, p, 22_500)  # LED meter, 10000 imp/kWh at 16 kW
    p.service(clk.ticks_ms())
    assert p.index == 200 and p.rejected == 0


def test_no_edge_lost_or_double_counted_across_drains():
    clk = Clock()
    p = _counter(clk, min_ms=0)
    total = 0
    for round_ in range(50):
        for _ in range(round_ % 7):
            _edge_at(clk, p, 1000)
            total += 1
        p.service(clk.ticks_ms())
        assert p.index == total


def test_power_from_the_time_between_pulses():
    clk = Clock()
    p = _counter(clk)
    for _ in range(5):
        _edge_at(clk, p, 3_600_000)  # 1 pulse / 3.6 s at 1000 imp/kWh = 1000 W
        p.service(clk.ticks_ms())
    assert abs(p.power_w - 1000.0) < 0.01
    for _ in range(2):
        _edge_at(clk, p, 1_800_000)  # load doubles
        p.service(clk.ticks_ms())
    assert abs(p.power_w - 2000.0) < 0.01  # exact within 2 pulses of the step


def test_power_decays_when_pulses_stop_then_reaches_zero_after_the_timeout():
    clk = Clock()
    p = _counter(clk, zero_s=60)
    for _ in range(4):
        _edge_at(clk, p, 3_600_000)
        p.service(clk.ticks_ms())
    assert abs(p.power_w - 1000.0) < 0.01
    clk.advance_us(3_000_000)
    p.service(clk.ticks_ms())
    assert abs(p.power_w - 1000.0) < 0.01  # gap shorter than the last interval: unchanged
    clk.advance_us(4_200_000)  # 7.2 s since the last pulse: at most 500 W
    p.service(clk.ticks_ms())
    assert abs(p.power_w - 500.0) < 1
    clk.advance_us(60_000_000)
    p.service(clk.ticks_ms())
    assert p.power_w == 0.0


def test_timestamps_survive_the_ticks_us_wrap():
    clk = Clock((1 << 30) - 5_000_000)  # 5 s before ticks_us wraps
    p = _counter(clk)
    for _ in range(4):
        _edge_at(clk, p, 3_600_000)
        p.service(clk.ticks_ms())
    assert abs(p.power_w - 1000.0) < 0.01


def test_first_pulse_after_a_long_idle_uses_the_ms_clock():
    clk = Clock()
    p = _counter(clk, zero_s=3600)
    _edge_at(clk, p, 1000)
    p.service(clk.ticks_ms())
    clk.advance_ms(20 * 60 * 1000)  # 20 min: beyond ticks_us' half period
    p.edge(None)
    p.service(clk.ticks_ms())
    assert p.index == 2
    assert abs(p.power_w - 3.0) < 0.01  # one pulse (1 Wh) in 20 min = 3 W


class Hw:
    def __init__(self):
        self.count = 0

    def take(self):
        n, self.count = self.count, 0
        return n


def test_hardware_counter_gives_energy_when_handlers_were_missed():
    clk = Clock()
    hw = Hw()
    p = _counter(clk, hw=hw)
    for _ in range(3):
        hw.count += 1
        _edge_at(clk, p, 3_600_000)
        p.service(clk.ticks_ms())
    hw.count += 40  # Python was blocked: 40 edges counted in hardware, 2 handlers ran
    _edge_at(clk, p, 3_600_000)
    _edge_at(clk, p, 3_600_000)
    p.service(clk.ticks_ms())
    assert p.index == 43 and p.missed_edges == 38
    assert abs(p.power_w - 1000.0) < 0.01  # not recomputed from misleading spacing


def test_energy_text_is_exact():
    assert energy_text(0, 1000) == "0.000"
    assert energy_text(12345, 1000) == "12.345"
    assert energy_text(123456789123, 1000) == "123456789.123"
    assert energy_text(7, 800) == "0.00875"
    assert energy_text(10001, 10000) == "1.0001"
    assert energy_text(5, 2000) == "0.0025"
    assert energy_text(5, 1) == "5"
    assert energy_text(1, 3) == "0.333333333"
    assert energy_text(2, 3) == "0.666666667"
    for per in (100, 500, 800, 1000, 1600, 2000, 3200, 10000):
        for idx in (0, 1, 7, 999, 123457, 98765432):
            assert float(energy_text(idx, per)) == idx / per, (idx, per)


def test_the_first_edges_after_ten_silent_minutes_are_not_taken_for_bounces():
    # ticks_us wraps every 17.9 min on the ESP32: after 8.9 min of silence the last accepted
    # edge's stamp reads as lying in the future, and unless the main loop forgets it every edge
    # for up to 9 more minutes is rejected as a bounce.
    clk = Clock()
    p = _counter(clk)
    p.edge(None)
    p.service(clk.ticks_ms())
    for _ in range(600):  # 10 min of silence, the main loop stepping (every second here)
        clk.advance_ms(1000)
        p.service(clk.ticks_ms())
    for _ in range(3):
        _edge_at(clk, p, 3_600_000)
        p.service(clk.ticks_ms())
    assert p.index == 4 and p.rejected == 0


def test_power_after_a_week_without_pulses_comes_from_new_pulses_not_wrapped_ticks():
    # ticks_ms wraps every 12.4 days: a week reads as minus 5.4 days, so the last edge of a
    # week ago looked recent and the first power value came from wrapped µs stamps (here they
    # read 0.61 s apart: 5890 W from one pulse in a week).
    clk = Clock()
    p = _counter(clk, zero_s=300)
    for _ in range(4):
        _edge_at(clk, p, 3_600_000)
        p.service(clk.ticks_ms())
    for _ in range(7 * 24 * 60):  # a week, the main loop stepping (every minute here)
        clk.advance_ms(60000)
        p.service(clk.ticks_ms())
    for _ in range(791):
        clk.advance_ms(1000)
        p.service(clk.ticks_ms())
    assert p.power_w == 0.0
    p.edge(None)
    p.service(clk.ticks_ms())
    assert p.power_w == 0.0  # one pulse in a week: nothing to measure yet
    for _ in range(2):
        _edge_at(clk, p, 1_800_000)
        p.service(clk.ticks_ms())
    assert abs(p.power_w - 2000.0) < 0.01 and p.index == 7
