"""firmware.startup (the config check at boot, the TLS context, the bad-config halt) and
firmware.crashes (the crash counter)."""

import json

import pytest

from fakes import FakeHal
from harness import BASE
from firmware import crashes, startup
from firmware.log import Log
from firmware.store import Store


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def write_config(**over):
    raw = dict(BASE, **over)
    with open("config.json", "w") as f:
        json.dump(raw, f)


def test_a_valid_config_with_tls_gives_a_context_trusting_every_certificate_in_the_bundle():
    hal = FakeHal()
    write_config(tb_tls=True, tb_plain_ok=False)
    with open("ca.der", "wb") as f:
        f.write(b"\x30\x03abc" + b"\x30\x82\x00\x02xy")  # two DER certificates, short and long form
    cfg, tls, errors = startup.load_config(hal.ssl)
    assert errors == [] and cfg["tb_port"] == 8883
    assert tls.loaded == [b"\x30\x03abc", b"\x30\x82\x00\x02xy"]


@pytest.mark.parametrize("content, why", [
    (None, "tb_ca: file ca.der not found on flash"),
    (b"-----BEGIN CERTIFICATE-----", "tb_ca: ca.der: not DER certificates (convert PEM with "
                                     "openssl x509 -outform DER)"),
    (b"\x30\x82\x05\x00abc", "tb_ca: ca.der: truncated certificate"),
    (b"", "tb_ca: ca.der: empty"),
])
def test_a_missing_or_unusable_ca_file_is_one_config_error_naming_tb_ca(content, why):
    write_config(tb_tls=True, tb_plain_ok=False)
    if content is not None:
        with open("ca.der", "wb") as f:
            f.write(content)
    _cfg, tls, errors = startup.load_config(FakeHal().ssl)
    assert tls is None and errors == [why]


def test_the_config_error_halt_shows_the_pattern_on_the_configured_led_and_restarts_once_fixed():
    hal = FakeHal()
    pins = []
    hal.led_setter = lambda pin, inverted: pins.append((pin, inverted)) or hal.led.append
    write_config(status_led_pin=2, cups="ES0021000000012345XX0F")
    lines = []
    log = Log(hal.ticks_ms, lines.append)
    cfg, _tls, errors = startup.load_config(hal.ssl)
    assert errors == ["cups: check letters should be DZ for these digits, got XX"]

    fixed_at = [None]

    def sleep(ms):  # the technician fixes the file a minute into the halt
        hal.clock.advance_ms(ms)
        if fixed_at[0] is None and hal.clock.us > 60_000_000:
            write_config(status_led_pin=2)
            fixed_at[0] = hal.clock.us

    hal.sleep_ms = sleep
    with pytest.raises(SystemExit):
        startup.config_error_loop(hal, log, errors, cfg)
    assert pins == [(2, False)]
    assert hal.led[:3] == [True, False, True]  # the config-error flashes, on pin 2
    assert "E config: cups: check letters should be DZ for these digits, got XX" in "\n".join(lines)
    assert lines[-1].endswith("config.json is valid now; restarting") and hal.resets == 1
    assert hal.wdt_feeds >= 600  # the watchdog is fed all along (every 50 ms for 30 s at least)


def test_a_bad_led_pin_is_not_used_for_the_error_pattern():
    hal = FakeHal()
    pins = []
    hal.led_setter = lambda pin, inverted: pins.append(pin)
    write_config(status_led_pin=99)
    cfg, _tls, errors = startup.load_config(hal.ssl)
    hal.reset = lambda: (_ for _ in ()).throw(SystemExit)
    hal.sleep_ms = lambda ms: (hal.clock.advance_ms(ms), write_config())
    with pytest.raises(SystemExit):
        startup.config_error_loop(hal, Log(hal.ticks_ms, lambda line: None), errors, cfg)
    assert pins == [None]


def test_crash_pause_doubles_up_to_ten_minutes_and_is_forgotten():
    store = Store(Log(lambda: 0, lambda line: None))
    pauses = [crashes.pause_ms(store) for _ in range(9)]
    assert pauses == [10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000]
    crashes.forget(store)
    assert crashes.pause_ms(store) == 10_000
