from firmware.gesture import BootGesture
from firmware.readings import ReadingQueue
from firmware.led import PATTERNS, StatusLed
from firmware.store import Store
from support import Clock, ListLog, fresh_dir


def _boot(store, clk, cycles=4, window_s=10, counted=True):
    g = BootGesture(store, cycles, window_s * 1000, clk.ticks_diff)
    return g, g.boot(clk.ticks_ms(), counted)


def test_four_quick_power_cycles_request_reprovisioning():
    fresh_dir()
    s, clk = Store(ListLog()), Clock()
    results = []
    for _ in range(4):
        g, req = _boot(s, clk)
        results.append(req)
        clk.advance_ms(3000)  # power cut 3 s after boot
    assert results == [False, False, False, True]
    g, req = _boot(s, clk)  # the request survives power cuts until served
    assert req
    g.done()
    g, req = _boot(s, clk)
    assert not req


def test_a_boot_that_stays_up_for_the_window_resets_the_count():
    fresh_dir()
    s, clk = Store(ListLog()), Clock()
    for _ in range(3):
        g, req = _boot(s, clk)
        assert not req
        clk.advance_ms(2000)
    g, req = _boot(s, clk)  # 4th boot, but this one stays up past the window
    assert req
    g.done()
    clk.advance_ms(11000)
    g.tick(clk.ticks_ms())
    results = []
    for _ in range(3):  # three more quick cycles: 1, 2, 3 again, not 5, 6, 7
        g, req = _boot(s, clk)
        results.append(req)
        clk.advance_ms(2000)
    assert results == [False, False, False]
    clk.advance_ms(9000)
    g.tick(clk.ticks_ms())  # the third one stays up: back to 0
    for _ in range(3):
        g, req = _boot(s, clk)
        clk.advance_ms(11000)
        g.tick(clk.ticks_ms())  # each boot stays up: the count never builds up
        assert not req


def test_slow_power_cycles_never_trigger_and_zero_cycles_disables():
    fresh_dir()
    s, clk = Store(ListLog()), Clock()
    for _ in range(10):
        g, req = _boot(s, clk)
        assert not req
        clk.advance_ms(10_000)
        g.tick(clk.ticks_ms())
    fresh_dir()
    s = Store(ListLog())
    for _ in range(10):
        g, req = _boot(s, clk, cycles=0)
        assert not req


def test_resets_never_count_and_break_a_gesture_in_progress():
    # A crash loop: firmware/entry.py resets the board seconds after each boot, well within the
    # window.
    fresh_dir()
    s, clk = Store(ListLog()), Clock()
    g, req = _boot(s, clk)  # the power-up before the crashes
    clk.advance_ms(2000)
    for _ in range(6):
        g, req = _boot(s, clk, counted=False)
        assert not req
        clk.advance_ms(2000)
    # Three power cycles, a reset, one more power cycle: not four in a row.
    for _ in range(3):
        g, req = _boot(s, clk)
        assert not req
        clk.advance_ms(2000)
    g, req = _boot(s, clk, counted=False)
    clk.advance_ms(2000)
    g, req = _boot(s, clk)
    assert not req
    # A request already made survives resets until served.
    for _ in range(3):
        clk.advance_ms(2000)
        g, req = _boot(s, clk)
    assert req
    g, req = _boot(s, clk, counted=False)
    assert req


def test_request_from_software_is_kept_until_served():
    fresh_dir()
    s, clk = Store(ListLog()), Clock()
    g, req = _boot(s, clk)
    assert not req
    g.request()  # the BOOT button or the reprovision RPC
    g, req = _boot(s, clk, counted=False)
    assert req
    g.done()
    g, req = _boot(s, clk)
    assert not req


def test_queue_keeps_order_drops_oldest_when_full():
    q = ReadingQueue(4)
    for i in range(6):
        q.push(1000 + i, i, i * 10)
    assert len(q) == 4 and q.dropped == 2
    assert q.peek(10) == [(1002, 2, 20), (1003, 3, 30), (1004, 4, 40), (1005, 5, 50)]
    q.drop(3)
    assert q.peek(10) == [(1005, 5, 50)]
    q.push(2000, 9, 0)
    assert q.peek(1) == [(1005, 5, 50)] and len(q) == 2


def test_led_patterns_cycle():
    clk = Clock()
    states = []
    led = StatusLed(states.append, clk.ticks_diff)
    led.show("run", clk.ticks_ms())
    assert states == [True]
    on, off = PATTERNS["run"]
    clk.advance_ms(on)
    led.update(clk.ticks_ms())
    clk.advance_ms(off)
    led.update(clk.ticks_ms())
    assert states == [True, False, True]
    for name in PATTERNS:
        led.show(name, clk.ticks_ms())
        assert led.name == name
