"""Setup mode's parts that must give the same answer on CPython and on the meter: the captive
DNS answer, the access point's name, HTML escaping, the boot decision, keeping new settings."""

import json
import os

from firmware import config
from firmware.setup_dns import reply
from firmware.setup_page import esc
from firmware.setup_ssid import ap_ssid
from firmware.setup_wifi import WifiSettings, read_config, save
from firmware.startup import setup_reason
from firmware.store import Store
from support import Clock, ListLog, fresh_dir

IP = bytes([192, 168, 4, 1])
GOOD = {"wifi_ssid": "site-wifi", "wifi_password": "site-password-1",
        "provision_key": "pk-0001", "provision_secret": "ps-0001", "supplier_key": "sk-0001",
        "cups": "ES0021000000012345DZ0F", "pulse_pin": 4, "setup_password": "abcd-efgh-jkmn-pqrs"}


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def query(name=b"connectivitycheck.gstatic.com", qtype=1, qclass=1, flags=b"\x01\x00",
          counts=b"\x00\x01\x00\x00\x00\x00\x00\x00", tail=b""):
    labels = b"".join(bytes([len(p)]) + p for p in name.split(b".")) if name else b""
    return (b"\xab\xcd" + flags + counts + labels + b"\x00" + bytes([qtype >> 8, qtype & 255])
            + bytes([qclass >> 8, qclass & 255]) + tail)


def answer(q):
    out = bytearray(512)
    n = reply(q, IP, out)
    return bytes(out[:n])


# --- the captive DNS answer ---------------------------------------------------------------------

def test_every_name_resolves_to_the_access_point():
    for name in (b"connectivitycheck.gstatic.com", b"captive.apple.com",
                 b"www.msftconnecttest.com", b"detectportal.firefox.com", b"x"):
        q = query(name)
        r = answer(q)
        assert r[:2] == b"\xab\xcd"  # the query's id
        assert r[2] & 0x80 and r[2] & 0x01 and r[3] & 0x0F == 0  # a response, RD kept, NOERROR
        assert r[4:8] == b"\x00\x01\x00\x01"  # one question, one answer
        assert r[12:len(q)] == q[12:]  # the question as asked
        assert r[len(q):] == b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x0a\x00\x04" + IP


def test_other_types_get_an_empty_answer_so_the_phone_asks_for_A():
    for qtype in (28, 65, 16):  # AAAA, HTTPS, TXT
        q = query(qtype=qtype)
        r = answer(q)
        assert r[6:8] == b"\x00\x00" and len(r) == len(q) and r[3] & 0x0F == 0


def test_an_edns_record_after_the_question_is_ignored():
    q = query(counts=b"\x00\x01\x00\x00\x00\x00\x00\x01", tail=b"\x00\x00\x29\x10\x00" + b"\x00" * 6)
    r = answer(q)
    assert r[-4:] == IP and r[10:12] == b"\x00\x00"  # no additional records in the answer


def test_anything_but_one_well_formed_standard_query_gets_no_answer():
    bad = [
        b"", b"\x00" * 11, query()[:16],  # too short, truncated question
        query(flags=b"\x81\x00"),  # a response, not a query
        query(flags=b"\x29\x00"),  # opcode 5 (UPDATE)
        query(flags=b"\x03\x00"),  # truncated
        query(counts=b"\x00\x02\x00\x00\x00\x00\x00\x00"),  # two questions
        query(counts=b"\x00\x01\x00\x01\x00\x00\x00\x00"),  # an answer in a query
        query(counts=b"\x00\x00\x00\x00\x00\x00\x00\x00"),  # no question
        query(qclass=3),  # CHAOS
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a pointer
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
        query(b".".join([b"a" * 63] * 4) + b".bb"),  # a name over 255 bytes
        query()[:-1],  # no room for the class
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05abc",  # a label past the end
        b"\x00" * 600,  # longer than a DNS message
    ]
    for q in bad:
        assert answer(q) == b"", q


def test_a_name_of_exactly_255_bytes_is_answered():
    name = b".".join([b"a" * 63] * 3) + b"." + b"b" * 61  # 64 * 3 + 62 + 1 (the root) = 255
    r = answer(query(name))
    assert r[-4:] == IP


# --- the access point's name, escaping ------------------------------------------------------------

def test_the_access_point_is_named_after_the_device():
    assert ap_ssid("meter-0001") == "meter-0001-setup"
    assert ap_ssid("meter-a1b2c3d4e5f6") == "meter-a1b2c3d4e5f6-setup"
    assert ap_ssid("shop 12/<b>") == "meter-shop12b-setup"
    long = ap_ssid("x" * 40)
    assert long == "meter-" + "x" * 20 + "-setup" and len(long.encode()) == 32
    assert ap_ssid("meter-") == "meter-x-setup" and ap_ssid("\u00e9t\u00e9") == "meter-t-setup"


def test_html_escaping_leaves_no_markup():
    assert esc("<script>alert('x')</script> & \"y\"") == (
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;")


# --- when setup mode opens (firmware/startup.py) ------------------------------------------------

def _boot(raw, request=None):
    fresh_dir()
    text = json.dumps(raw)
    with open("config.json", "w") as f:
        f.write(text)
    store = Store(ListLog())
    if request is not None:
        store.write("setup_request", request)
    cfg, errors = config.parse(text)
    return store, setup_reason(store, cfg, errors)


def test_a_valid_config_boots_normally():
    _store, (why, cfg, errors) = _boot(GOOD)
    assert why is None and errors == [] and cfg["wifi_ssid"] == "site-wifi"


def test_missing_or_bad_wifi_settings_open_setup_with_the_rest_of_the_config():
    for drop, over in (("wifi_ssid", {}), (None, {"wifi_password": "short"}),
                       (None, {"wifi_ssid": ""}), ("wifi_ssid", {"wifi_password": "whatever1"})):
        raw = dict(GOOD, **over)
        if drop:
            del raw[drop]
        _store, (why, cfg, errors) = _boot(raw)
        assert why is not None and why.startswith("no usable Wi-Fi settings (wifi_"), why
        assert errors == [] and cfg["wifi_ssid"] is None and cfg["pulse_pin"] == 4
        assert cfg["setup_timeout_s"] == 900  # defaults filled as at any boot


def test_other_errors_are_config_errors_even_with_bad_wifi():
    raw = dict(GOOD, pulse_pin="four")
    del raw["wifi_ssid"]
    _store, (why, _cfg, errors) = _boot(raw)
    assert why is None and "wifi_ssid: required" in errors
    assert "pulse_pin: must be an integer" in errors
    raw = dict(GOOD, retry_min_s=500, retry_max_s=100)  # a cross-check, past the Wi-Fi
    del raw["wifi_password"]
    raw["wifi_ssid"] = ""
    _store, (why, _cfg, errors) = _boot(raw)
    assert why is None and [e for e in errors if e.startswith("wifi_ssid:")]
    assert "retry_min_s: must not exceed retry_max_s" in errors  # every error at once


def test_without_a_setup_password_it_never_opens():
    raw = dict(GOOD)
    del raw["wifi_ssid"], raw["setup_password"]
    _store, (why, _cfg, errors) = _boot(raw)
    assert why is None and [e for e in errors if e.startswith("setup_password: needed")]
    raw = dict(GOOD)
    del raw["setup_password"]
    store, (why, _cfg, errors) = _boot(raw, {"why": "BOOT button held 10 s"})
    assert why is None and errors == []


def test_a_request_on_flash_opens_setup_once():
    store, (why, _cfg, errors) = _boot(GOOD, {"why": "could not join site-wifi for 600 s"})
    assert why == "could not join site-wifi for 600 s" and errors == []
    assert store.read("setup_request") is None  # a crash or a power cut in setup: a normal boot
    cfg, errors = config.parse(json.dumps(GOOD))
    assert setup_reason(store, cfg, errors)[0] is None


def test_a_garbled_request_still_opens_with_a_plain_reason():
    for rec in ({"why": 12}, {"why": ""}, [1, 2], {"why": "x" * 500}):
        _store, (why, _cfg, _errors) = _boot(GOOD, rec)
        assert why == "requested" or why == "x" * 120, why


# --- keeping new settings (firmware/setup_wifi.py) ----------------------------------------------

class JoinHal:
    # The station side of the HAL: a site with one network and its password.
    def __init__(self, clock, networks=(("site-wifi", "new-password-2"),)):
        self.clock = clock
        self.ticks_diff = clock.ticks_diff
        self.networks = dict(networks)
        self.join = None
        self.joins = 0

    def wifi_connect(self, ssid, password):
        self.join = (ssid, password)
        self.joins += 1

    def wifi_disconnect(self):
        self.join = None

    def wifi_connected(self):
        return self.join is not None and self.networks.get(self.join[0]) == self.join[1]

    def wifi_status(self):
        if self.wifi_connected():
            return "connected"
        if self.join is not None and self.join[0] in self.networks:
            return "wrong password"
        return "access point not found"


def _settings(networks=(("site-wifi", "new-password-2"),)):
    fresh_dir()
    with open("config.json", "w") as f:
        f.write(json.dumps(dict(GOOD, wifi_password="old-password-1")))
    clk = Clock()
    hal = JoinHal(clk, networks)
    return clk, hal, WifiSettings(hal, ListLog())


def _try(clk, w, ssid, password):
    raw, errors = w.check(ssid, password)
    assert errors == []
    w.start(clk.ticks_ms(), ssid, password, raw)
    for _ in range(300):
        done = w.poll(clk.ticks_ms())
        if done is not None:
            return done
        clk.advance_ms(100)
    raise AssertionError("the join never ended")


def test_bad_settings_are_refused_by_the_firmware_validator_naming_the_field():
    _clk, _hal, w = _settings()
    assert w.check("site-wifi", "short")[1] == [
        "wifi_password: must be empty (open network) or 8 to 63 characters"]
    assert w.check("", "password-1")[1][0].startswith("wifi_ssid: must be 1 to 32 bytes (UTF-8)")
    assert w.check("a\nb", "password-1")[1] == ["wifi_ssid: must not contain control characters"]
    assert w.check("x" * 33, "password-1")[1][0].startswith("wifi_ssid:")


def test_the_page_gets_the_whole_validator_s_verdict_on_its_two_fields():
    # firmware/setup_wifi.py checks only the network and password, with the validator's rules
    # for them (the rest of config.json passed it at boot): the same lines as config.validate
    # over the whole file, for names and passwords of every kind, on both runtimes.
    _clk, _hal, w = _settings()
    texts = ["", " ", "   ", "a", "site-wifi", "x" * 7, "x" * 8, "x" * 32, "x" * 33, "x" * 63,
             "x" * 64, "caf\u00e9 wifi", "\u00e9" * 16, "\u00e9" * 17, "a\nb", "a\x00", "\x7f",
             "\u0085", "tab\there", "rtl\u202eoverride", "bom\ufeff", "\U0001f600" * 8,
             "\U0001f600" * 9, "\ufdd0", "emoji \U0001f4f6 ok", "pass word 1", "\u2028"]
    for ssid in texts:
        for password in texts:
            raw = dict(GOOD, wifi_ssid=ssid, wifi_password=password)
            assert w.check(ssid, password) == (raw, config.validate(raw)[1]), (ssid, password)
    assert w.check(None, "password-1")[1] == config.validate(dict(GOOD, wifi_ssid=None))[1]


def test_a_wrong_password_says_why_and_keeps_the_old_settings():
    clk, hal, w = _settings()
    before = read_config()
    assert _try(clk, w, "site-wifi", "wrong-password-9") is False
    assert w.result == (False, "site-wifi", "wrong password")
    assert read_config() == before and not exists("config.json.tmp")
    assert hal.join is None  # disconnected: the driver does not keep retrying it
    assert _try(clk, w, "other-net", "password-123") is False
    assert w.result[2] == "access point not found" and read_config() == before


def test_settings_that_work_are_written_atomically_and_read_back():
    clk, _hal, w = _settings()
    assert _try(clk, w, "site-wifi", "new-password-2") is True
    cfg = read_config()
    assert cfg["wifi_ssid"] == "site-wifi" and cfg["wifi_password"] == "new-password-2"
    assert cfg["pulse_pin"] == 4 and cfg["setup_password"] == GOOD["setup_password"]
    assert not exists("config.json.tmp")
    with open("config.json") as f:
        assert config.parse(f.read())[1] == []  # what the next boot reads


def test_a_join_that_never_answers_gives_up_after_its_deadline():
    clk, hal, w = _settings()
    hal.wifi_status = lambda: "connecting"
    raw, _errors = w.check("site-wifi", "wrong-password-9")
    w.start(clk.ticks_ms(), "site-wifi", "wrong-password-9", raw)
    clk.advance_ms(19000)
    assert w.poll(clk.ticks_ms()) is None
    clk.advance_ms(1500)
    assert w.poll(clk.ticks_ms()) is False and w.result[2] == "connecting"


def test_save_leaves_the_old_file_when_the_write_fails():
    fresh_dir()
    with open("config.json", "w") as f:
        f.write(json.dumps(GOOD))
    os.mkdir("config.json.tmp")  # the temp file cannot be made: a flash error
    why = save(dict(GOOD, wifi_ssid="other"))
    assert why is not None and read_config() == GOOD
