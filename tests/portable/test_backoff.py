from firmware.backoff import Backoff


class Seq:
    def __init__(self, values):
        self.values = list(values)

    def __call__(self):
        return self.values.pop(0)


def test_doubles_from_min_to_max_with_delays_in_the_upper_half():
    b = Backoff(1000, 30000, Seq([0.0] * 8))
    assert [b.next_ms() for _ in range(8)] == [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]
    b = Backoff(1000, 30000, Seq([0.999999] * 7))
    assert [b.next_ms() for _ in range(7)] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]


def test_reset_starts_over_and_jitter_spreads_a_fleet():
    import random
    rng = random.random
    b = Backoff(2000, 300000, rng)
    for _ in range(30):
        b.next_ms()
    b.reset()
    first = [Backoff(2000, 300000, rng).next_ms() for _ in range(200)]
    assert min(first) >= 1000 and max(first) <= 2000
    assert len(set(first)) > 50  # a fleet that failed together does not retry together


def test_never_exceeds_the_cap_after_many_failures():
    b = Backoff(5, 100, Seq([0.99] * 100))
    assert max(b.next_ms() for _ in range(100)) <= 100
