"""Unit checks of the Gson-like parser, ThingsBoard's number typing and the rate-limit buckets."""
import pytest

from tbsim import tbjson
from tbsim.ratelimits import Bucket, DeviceLimits


@pytest.mark.parametrize("text,expected", [
    ("", None), ("   ", None),
    ("{a: 1; b = 2, c => 'x'}", {"a": 1, "b": 2, "c": "x"}),
    ("// note\n{\"k\": [1,,2]} # trailing comment", {"k": [1, None, 2]}),
    ("{/* c */ k: TRUE, n: Null}", {"k": True, "n": None}),
    ("{k: unquoted-text}", {"k": "unquoted-text"}),
    ("{k: 01}", {"k": "01"}),                      # not a JSON number: an unquoted string
])
def test_lenient_parse(text, expected):
    assert tbjson.to_python(tbjson.parse(text)) == expected


@pytest.mark.parametrize("text", ["{", "{a 1}", '{"a":1} x', "[1 2]", "{'a':'\\x'}", "}"])
def test_lenient_parse_errors(text):
    with pytest.raises(tbjson.Invalid):
        tbjson.parse(text)


@pytest.mark.parametrize("value,expected", [
    (tbjson.JNum("1700000000000"), 1700000000000), (tbjson.JNum("1.7e12"), 1700000000000),
    (tbjson.JNum("-1.9"), -1), ("42", 42), ("+42", 42), ([tbjson.JNum("7")], 7),
])
def test_ts_reading(value, expected):
    assert tbjson.as_long(value) == expected


@pytest.mark.parametrize("value,error", [
    ("1.5", tbjson.Crash), ("abc", tbjson.Crash), (True, tbjson.Crash), (None, tbjson.Crash),
    ({}, tbjson.Crash), ([1, 2], tbjson.Invalid), ("99999999999999999999", tbjson.Crash),
])
def test_ts_reading_errors(value, error):
    with pytest.raises(error):
        tbjson.as_long(value)


@pytest.mark.parametrize("x,text", [(25.0, "25.0"), (1e20, "1.0E20"), (1e-5, "1.0E-5"), (0.001, "0.001"),
                                    (12345678.0, "1.2345678E7"), (9999999.0, "9999999.0"), (-2.5, "-2.5"),
                                    (0.0, "0.0")])
def test_java_double_notation(x, text):
    assert tbjson.java_double(x) == text


def test_to_json_is_compact_and_ordered():
    assert tbjson.to_json({"b": 1, "a": [True, None, 1.5, "é"]}) == '{"b":1,"a":[true,null,1.5,"é"]}'


def test_bucket_greedy_refill_and_all_windows():
    now = [0.0]
    bucket = Bucket("2:1,3:10", clock=lambda: now[0])
    assert bucket.try_consume() and bucket.try_consume() and not bucket.try_consume()
    now[0] = 0.5                                     # half a second refills one token of 2:1...
    assert bucket.try_consume()                      # ...and the 3:10 window still had one left
    now[0] = 1.5
    assert not bucket.try_consume()                  # 3:10 window empty (refills 0.3/s)
    now[0] = 5.0
    assert bucket.try_consume()


def test_device_limits_split_messages_and_telemetry():
    now = [0.0]
    limits = DeviceLimits("free", clock=lambda: now[0])
    assert all(limits.check(0) for _ in range(50)) and not limits.check(0)
    assert limits.check(100)                          # telemetry has its own buckets
    assert not limits.check(1)                        # 100 data points per second used up
