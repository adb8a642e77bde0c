import json

from firmware import attributes, provision, telemetry
from firmware.config import escape
from firmware.log import mask
from firmware.pulses import energy_text
from support import telemetry_bytes

CFG = {"attr_supplier_key": "Power_suppier_secret_key", "attr_cups_key": "CUPs",
       "supplier_key": "sk-123", "cups": "ES1234123456789012JY"}


def test_telemetry_point_and_batch_are_valid_json_with_ms_timestamps():
    one = json.loads(telemetry_bytes([(1795000000123, 12345, 15005)], 1000))
    assert one == {"ts": 1795000000123, "values": {"energy_kwh": 12.345, "power_w": 1500.5,
                                                     "pulses": 12345}}
    many = json.loads(telemetry_bytes([(1795000000000, 1, 0), (1795000060000, 2, 9)], 1000))
    assert [m["ts"] for m in many] == [1795000000000, 1795000060000]
    assert many[1]["values"]["power_w"] == 0.9
    unsynced = json.loads(telemetry_bytes([(0, 3, 10)], 1000))
    assert unsynced == {"energy_kwh": 0.003, "power_w": 1.0, "pulses": 3}


def _point(ts, index, power_dw, per_kwh):
    # One reading with % formatting, as the payload was built before it wrote its digits itself.
    values = '{"energy_kwh":%s,"power_w":%d.%d,"pulses":%d}' % (
        energy_text(index, per_kwh), power_dw // 10, power_dw % 10, index)
    return ('{"ts":%d,"values":%s}' % (ts, values) if ts else values).encode()


def test_the_digits_written_in_place_are_the_formatted_text_on_both_paths():
    # Small ints are written digit by digit; a big int (the timestamp on the ESP32, where
    # small ints end at 2**30) is formatted with %d: both must give the same bytes.
    readings = [(1795000000123, 12345678, 15005), (0, 0, 0), (1, 1, 9), (1795000060000, 10, 10),
                (1795000120000, 2**31 + 7, 1000000000), (999, 1000, 5)]
    for per_kwh in (1, 3, 800, 1000, 1200, 10000):
        want = b"[" + b",".join(_point(*r, per_kwh) for r in readings) + b"]"
        for cap in (None, (1 << 30) - 1, 0):
            p = telemetry.Payload(2560)
            if cap is not None:
                p._cap = cap  # 0: every number through %d
            mv, n = p.batch(readings, per_kwh)
            assert (bytes(mv), n) == (want, len(readings)), (per_kwh, cap)


def test_a_reading_that_does_not_fit_is_left_out_whole():
    readings = [(1795000000000 + i, 12345 + i, 15005) for i in range(5)]
    whole = [_point(*r, 1000) for r in readings]
    for size in range(len(whole[0]) + 2, 2 + sum(len(w) + 1 for w in whole) + 4):
        mv, n = telemetry.Payload(size).batch(readings, 1000)
        text = bytes(mv)
        assert len(text) <= size and text == b"[" + b",".join(whole[:n]) + b"]", size
        # the next reading (its comma and the closing bracket) would not have fitted
        assert n == len(readings) or len(text) + 1 + len(whole[n]) > size, size


def test_no_null_nan_or_infinity_can_appear():
    for p in (0.0, -1.0, 1e-9, 123456.78):
        assert telemetry.power_dw(p) >= 0
    text = telemetry_bytes([(1, 0, telemetry.power_dw(0.0))], 1000).decode()
    for bad in ("null", "NaN", "Infinity"):
        assert bad not in text
    h = json.loads(telemetry.health(0, 10, None, 5000, 0, 0))
    assert "rssi_dbm" not in h and h["uptime_s"] == 10


def test_health_says_how_noisy_the_pulse_input_is():
    h = json.loads(telemetry.health(1795000000000, 10, -61, 5000, 3, 20, 2))
    assert h == {"ts": 1795000000000, "values": {"uptime_s": 10, "heap_free": 5000,
                                                "missed_edges": 3, "bounced_edges": 20,
                                                "flash_errors": 2, "rssi_dbm": -61}}


def test_attributes_payload_uses_the_configured_key_names():
    assert json.loads(attributes.payload(CFG)) == {"Power_suppier_secret_key": "sk-123",
                                                   "CUPs": "ES1234123456789012JY"}


def test_attribute_marker_changes_with_values_and_credentials_and_hides_them():
    a = attributes.marker(CFG, {"type": "ACCESS_TOKEN", "token": "t1"})
    assert a == attributes.marker(dict(CFG), {"type": "ACCESS_TOKEN", "token": "t1"})
    assert a != attributes.marker(dict(CFG, cups="ES1234123456789012JY1F"),
                                  {"type": "ACCESS_TOKEN", "token": "t1"})
    assert a != attributes.marker(CFG, {"type": "ACCESS_TOKEN", "token": "t2"})
    assert "sk-123" not in a and "t1" not in a


def test_provision_request_never_holds_null():
    req = json.loads(provision.build_request("k", "s", "meter-1"))
    assert req == {"provisionDeviceKey": "k", "provisionDeviceSecret": "s", "deviceName": "meter-1"}
    req = json.loads(provision.build_request("k", "s", "meter-1", None))
    assert None not in req.values()
    req = json.loads(provision.build_request("k", "s", "meter-1", "tok"))
    assert req["credentialsType"] == "ACCESS_TOKEN" and req["token"] == "tok"


def test_every_provision_reply():
    P = provision
    ok = P.parse_reply(b'{"credentialsValue":"abc","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}')
    assert ok == (P.SUCCESS, {"type": "ACCESS_TOKEN", "token": "abc"}, "")
    basic = P.parse_reply(json.dumps({"credentialsValue": {"clientId": "c", "userName": "u",
                                      "password": "p"}, "credentialsType": "MQTT_BASIC",
                                      "status": "SUCCESS"}).encode())
    assert basic[0] == P.SUCCESS and basic[1] == {"type": "MQTT_BASIC", "clientId": "c",
                                                  "userName": "u", "password": "p"}
    nf = P.parse_reply(b'{"errorMsg":"Provision data was not found!","status":"NOT_FOUND"}')
    assert nf == (P.NOT_FOUND, None, "Provision data was not found!")
    fl = P.parse_reply(b'{"errorMsg":"Failed to provision device!","status":"FAILURE"}')
    assert fl == (P.FAILURE, None, "Failed to provision device!")
    for bad in (b"", b"not json", b"[]", b"null", b'{"status":"UNKNOWN"}', b'{"status":7}',
                b'{"status":"SUCCESS"}', b'{"status":"SUCCESS","credentialsType":"X509_CERTIFICATE","credentialsValue":"pem"}',
                b'{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN","credentialsValue":""}',
                b'{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN","credentialsValue":null}',
                b'{"status":"SUCCESS","credentialsType":"MQTT_BASIC","credentialsValue":"x"}',
                b'\xff\xfe', b'{"status":' + b'[' * 50 + b']' * 50 + b'}', b'{"status":"' + b'A' * 5000 + b'"}'):
        outcome, creds, detail = P.parse_reply(bad)
        assert outcome == P.BAD_REPLY and creds is None, bad
        assert len(detail) < 120


def test_mask_shows_at_most_two_characters_each_side():
    assert mask("abcdefghijkl") == "ab...kl"
    assert mask("abcdefgh") == "ab...gh"
    assert mask("abcdefg") == "..."  # shorter than 8: nothing of it
    assert mask("") == "..."
    assert mask(None) == "<none>"
    assert mask("\n\x1bcdefg\u00e9\u202e") == "..."  # what it would show is not plain text
    assert mask("ab\ncdefgh") == "ab...gh" and mask("a\\cdefg\\") == "a\\...g\\"


def test_escape_makes_any_text_one_printable_ascii_line():
    assert escape("plain text") == "plain text"
    assert escape("a\nb\r\x00\\") == "a\\x0ab\\x0d\\x00\\\\"
    assert escape(b"\xff\xfe") == "\\xff\\xfe"
    assert escape("x" * 81) == "x" * 80 + "..."
    assert escape(ValueError("bad\nline")) == "bad\\x0aline"
    for b in escape("\u2028\u202e\x1b[31m\U0001f600" * 10).encode():
        assert 32 <= b < 127
