"""firmware.startup (the config check at boot, the TLS context, the bad-config halt),
main.py running firmware/entry.py, and its crash counter."""

import builtins
import gc
import json
import os
import sys
import types

import pytest

from fakes import FakeBroker, FakeHal, FakeUmqtt
from harness import BASE
from firmware import entry, startup
from firmware.log import Log
from firmware.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    pauses = [entry.pause_ms(store) for _ in range(9)]
    assert pauses == [10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000, 600_000]
    entry.forget(store)
    assert entry.pause_ms(store) == 10_000


# --- hostile files at boot (issue 12): always a config error, never an exception ------------

def write_raw(data, name="config.json"):
    with open(name, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("ca, why", [
    (b"\x30\x03abc" * 3000, "tb_ca: ca.der: larger than 8192 bytes"),
    (b"\x30\x00" * 100, "tb_ca: ca.der: more than 8 certificates"),
    (b"\x30\x84\xff\xff\xff\xff", "tb_ca: ca.der: bad DER length"),
    (b"\x30\x83\xff\xff\xff", "tb_ca: ca.der: truncated certificate"),
    (b"\xff" * 4096, "tb_ca: ca.der: not DER certificates (convert PEM with openssl x509 "
                     "-outform DER)"),
])
def test_a_huge_or_malformed_ca_file_is_a_config_error_naming_tb_ca(ca, why):
    write_config(tb_tls=True, tb_plain_ok=False)
    write_raw(ca, "ca.der")
    _cfg, tls, errors = startup.load_config(FakeHal().ssl)
    assert tls is None and errors == [why]


def test_whatever_mbedtls_raises_about_the_ca_is_a_config_error():
    hal = FakeHal()
    write_config(tb_tls=True, tb_plain_ok=False)
    write_raw(b"\x30\x03abc", "ca.der")
    real = hal.ssl.SSLContext

    def context(proto):
        ctx = real(proto)

        def refuse(cadata=None):
            raise MemoryError("memory allocation failed, allocating 4096 bytes\nfake line")
        ctx.load_verify_locations = refuse
        return ctx
    hal.ssl.SSLContext = context
    _cfg, tls, errors = startup.load_config(hal.ssl)
    assert tls is None and errors == [
        "tb_ca: ca.der: memory allocation failed, allocating 4096 bytes\\x0afake line"]


def test_a_failure_inside_the_check_is_still_a_config_error(monkeypatch):
    from firmware import config
    write_config()

    def broken(raw, warnings=None):
        raise RuntimeError("a bug\nE main: fake")
    monkeypatch.setattr(config, "validate", broken)
    cfg, tls, errors = startup.load_config(FakeHal().ssl)
    assert cfg is None and tls is None
    assert errors == ["config.json: could not be checked (RuntimeError: a bug\\x0aE main: fake)"]


def test_warnings_reach_the_boot_log_and_do_not_halt():
    hal = FakeHal()
    write_config(pulse_pin=12)
    lines = []
    cfg, _tls, errors = startup.load_config(hal.ssl, Log(hal.ticks_ms, lines.append))
    assert errors == [] and cfg["pulse_pin"] == 12
    assert len(lines) == 1 and " W config: pulse_pin: GPIO 12 is a strapping pin" in lines[0]


def test_a_missing_config_says_no_such_file():
    _cfg, _tls, errors = startup.load_config(FakeHal().ssl)
    assert errors == ["config.json: no such file"]


@pytest.mark.parametrize("data, why", [
    (b"\xff" * 4096, "config.json: starts with 0xFF bytes: erased or corrupt flash"),
    (b'{"wifi_ssid": "' + b"x" * 30000 + b'"}', "config.json: larger than 8192 bytes"),
    (b"[" * 8000, "config.json: line 1, column 9: nested deeper than 8 levels"),
    (b"\xef\xbb\xbf{}", "config.json: starts with a byte-order mark: save it as UTF-8 without BOM"),
])
def test_the_halt_repeats_one_escaped_line_per_error_and_re_reads_the_file(data, why):
    hal = FakeHal()
    write_raw(data)
    lines = []
    log = Log(hal.ticks_ms, lines.append)
    cfg, _tls, errors = startup.load_config(hal.ssl, log)
    assert errors == [why]
    start = hal.clock.us

    def sleep(ms):
        hal.clock.advance_ms(ms)
        if hal.clock.us - start > 95_000_000:  # three re-reads, then the file is fixed
            write_config()
    hal.sleep_ms = sleep
    with pytest.raises(SystemExit):
        startup.config_error_loop(hal, log, errors, cfg)
    assert [l.split(" ", 1)[1] for l in lines].count("E config: " + why) == 4  # at 0, 30, 60, 90 s
    assert lines[-1].endswith("config.json is valid now; restarting") and hal.resets == 1


def test_an_injected_newline_never_makes_a_log_line_of_its_own():
    hal = FakeHal()
    raw = dict(BASE)
    raw["x\n0.000 I main: meter firmware starting on esp32\n"] = 1
    with open("config.json", "w") as f:
        json.dump(raw, f)
    lines = []
    log = Log(hal.ticks_ms, lines.append)
    _cfg, _tls, errors = startup.load_config(hal.ssl, log)
    hal.reset = lambda: (_ for _ in ()).throw(SystemExit)
    hal.sleep_ms = lambda ms: (hal.clock.advance_ms(ms), write_config())
    with pytest.raises(SystemExit):
        startup.config_error_loop(hal, log, errors)
    assert errors == ["x\\x0a0.000 I main: meter firmware starting on esp32\\x0a: unknown field "
                      "(typo?)"]
    for line in lines:
        assert "\n" not in line and "\r" not in line


class _GcSpy(types.ModuleType):
    """The `gc` module main.py and firmware/entry.py import, recording what they ask of the
    collector; anything else is CPython's own."""

    def __init__(self, events):
        super().__init__("gc")
        self.events = events

    def collect(self):
        self.events.append("collect")

    def threshold(self, amount=None):
        self.events.append(("threshold", amount))

    def __getattr__(self, name):
        return getattr(gc, name)


def test_main_collects_after_every_gc_every_bytes_allocated_from_the_first_step(tmp_path,
                                                                             monkeypatch):
    # main.py as the board runs it (its source, not a copy), with the firmware/entry.py it
    # runs, on the fakes: the Unix HAL is FakeHal, `gc` a spy. The cadence firmware/entry.py
    # states: automatic collections every _GC_EVERY (16 KB) allocated, armed once before the
    # main loop's first step and never changed after; a full collection just before it, once
    # the meter is built.
    write_config()
    events = []
    broker = FakeBroker()

    class Hal(FakeHal):
        def __init__(self):
            super().__init__(broker=broker)

        def sleep_ms(self, ms):
            events.append("step")  # the supervisor's loop sleeps once a step
            if events.count("step") == 200:
                raise KeyboardInterrupt  # Ctrl-C at the console: main() re-raises it
            super().sleep_ms(ms)

    unix = types.ModuleType("firmware.hal.unix")
    unix.Hal = Hal
    monkeypatch.setitem(sys.modules, "firmware.hal.unix", unix)
    real_import = builtins.__import__

    def board_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "umqtt":  # the link imports umqtt.simple for each connect (main.py: None)
            pkg = types.ModuleType("umqtt")
            pkg.simple = FakeUmqtt(broker)
            sys.modules["umqtt"], sys.modules["umqtt.simple"] = pkg, pkg.simple
            return pkg
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr("builtins.__import__", board_import)
    monkeypatch.delitem(sys.modules, "umqtt", raising=False)
    monkeypatch.delitem(sys.modules, "umqtt.simple", raising=False)
    monkeypatch.setitem(sys.modules, "gc", _GcSpy(events))
    with open(os.path.join(ROOT, "main.py"), encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec")
    with pytest.raises(KeyboardInterrupt):
        exec(code, {"__name__": "__main__"})
    first_step = events.index("step")
    assert ("threshold", 16384) in events
    armed = events.index(("threshold", 16384))
    assert [e for e in events if isinstance(e, tuple)] == [("threshold", 16384)]  # never changed
    assert armed < first_step and events[armed - 1] == "collect"  # after the boot's collection
    assert events.count("step") == 200  # and the loop ran with it: the meter reporting
    assert broker.messages("v1/devices/me/telemetry"), broker.published[-3:]


def _run_main_py():
    with open(os.path.join(ROOT, "main.py"), encoding="utf-8") as f:
        exec(compile(f.read(), "main.py", "exec"), {"__name__": "__main__"})


def test_main_py_hands_a_firmware_whose_entry_module_does_not_load_to_bootslot(monkeypatch):
    # An OTA slot's firmware/entry.mpy corrupted: main.py's own import of it fails, and the
    # guard in main.py (never the firmware's code) gives the failed start to bootslot.reboot(),
    # which counts it and falls back after a few (tests/unit/test_bootslot.py).
    write_config()
    unix = types.ModuleType("firmware.hal.unix")
    unix.Hal = FakeHal
    monkeypatch.setitem(sys.modules, "firmware.hal.unix", unix)
    broken = ValueError("incompatible .mpy file")
    seen = []
    boot = types.ModuleType("bootslot")  # bootslot.run() drops its own module: a stand-in
    boot.run = lambda hal, build: (hal, 0)

    def reboot(e):
        seen.append(e)
        raise SystemExit(3)  # as bootslot.reset() does on the Unix port
    boot.reboot = reboot
    real_import = builtins.__import__

    def board_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "bootslot":
            return boot
        if name == "firmware" and fromlist and "entry" in fromlist:
            raise broken
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr("builtins.__import__", board_import)
    with pytest.raises(SystemExit):
        _run_main_py()
    assert seen == [broken]
