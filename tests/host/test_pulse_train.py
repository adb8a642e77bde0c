"""The lab's pulse player (lab/meterhost.py PulseTrain) on a fake clock: a pulse played late
never brings the next one closer than the load's gap (a wire no meter gives, and one the
firmware's debounce rightly takes for a bounce)."""

from lab import meterhost


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class FakeMeter:
    def __init__(self, clock, late_s):
        self.clock, self.late_s, self.times = clock, late_s, []
        self._closed = False

    def pulse(self, n=1, bounce=None):
        self.times.append(self.clock.now)
        # The player's next wake-up is late by this much (a loaded host), once each.
        self.clock.now += self.late_s.pop(0) if self.late_s else 0.0


class FakeHalt:
    def __init__(self, clock):
        self.clock = clock

    def is_set(self):
        return False

    def wait(self, delay):
        self.clock.now += delay
        return False


def _play(monkeypatch, late_s, pulses=20, load_w=180_000.0):
    clock = FakeClock()
    monkeypatch.setattr(meterhost.time, "monotonic", clock.monotonic)
    m = FakeMeter(clock, list(late_s))
    train = meterhost.PulseTrain(m, 1000, lambda t: load_w, max_pulses=pulses)
    train._halt = FakeHalt(clock)
    train.run()  # in this thread: the fake clock is all the time there is
    return train, [b - a for a, b in zip(m.times, m.times[1:])]


def test_a_late_pulse_never_brings_the_next_one_closer(monkeypatch):
    # 50 pulses/s (20 ms apart); one wake-up 8 ms late, one 25 ms late (more than a gap).
    train, gaps = _play(monkeypatch, [0.0] * 5 + [0.008] + [0.0] * 5 + [0.025])
    assert train.played == 20
    assert min(gaps) >= 0.020 - 1e-9, gaps  # caught up, the gap would be 12 ms, then 0


def test_on_time_pulses_keep_the_load_s_rate(monkeypatch):
    # Lateness below the 1 ms tolerance does not move the schedule: no drift.
    train, gaps = _play(monkeypatch, [0.0005] * 20, pulses=50)
    assert abs(sum(gaps) - 49 * 0.020) < 1e-6
