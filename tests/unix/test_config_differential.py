"""The same verdict on CPython (tools/meterconfig.py) and MicroPython (the meter), issue 12.

Hypothesis generates config files on CPython (valid ones bent in the ways people and flash
chips bend them: Unicode that folds differently on the two runtimes, invalid and overlong
UTF-8, JSON that only MicroPython's lenient parser reads, huge and deep values, wrong types),
the firmware's validator judges each on CPython, and the same corpus is replayed on the Unix
port (tests/unix/config_replay.py). Every error, warning and checked value must be the same.
"""

import json
import os
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from firmware import config  # noqa: E402
from firmware.cups import check_letters, cups_error  # noqa: E402
from firmware.config import escape  # noqa: E402
from firmware.log import mask  # noqa: E402

DIGITS = "0021000000012345"
CUPS = "ES" + DIGITS + check_letters(DIGITS) + "0F"
GOOD = {"wifi_ssid": "meters", "wifi_password": "wifi-pass-1234", "provision_key": "k" * 20,
        "provision_secret": "s" * 20, "supplier_key": "supplier-secret-0001", "cups": CUPS,
        "pulse_pin": 4}

# Characters whose case, width or space-ness CPython and MicroPython see differently, and
# the invisible ones: long s (upper: S), dotless i (I), Kelvin sign (lower: k), sharp s (SS),
# fullwidth letters and digits, no-break and ideographic spaces, NEL, line separator, bidi
# override, BOM, a combining accent, an emoji, a non-character.
TRICKY = ["\u017f", "\u0131", "\u212a", "\u00df", "\uff21", "\uff10", "\u00a0", "\u3000",
          "\u0085", "\u2028", "\u202e", "\ufeff", "e\u0301", "\U0001f600", "\ufdd0", "\x7f",
          "s", "S", "e", "E", "z", " ", "-", "<", "{{", "}}", "+", "#", "$", "/", "\\", '"']
BYTES = [b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
         b"\xf4\x90\x80\x80", b"\x80", b"\xc3", b"\x00", b"\t", b"\n", b" ", b",", b":", b"}",
         b"{", b"]", b"[", b'"', b"\\", b"\\u", b"\\ud800", b"\\x41", b"0", b"-", b".", b"e",
         b"NaN", b"01", b"\xef\xbb\xbf", b"true", b"null"]

text = st.lists(st.sampled_from(TRICKY) | st.characters(codec="utf-8"), max_size=24).map("".join)


def cups_variant():
    # A real CUPS as a person might type it: any case, spaces and dashes, one character swapped
    # for a look-alike.
    @st.composite
    def make(draw):
        chars = list(draw(st.sampled_from([CUPS, CUPS[:20], "ES0031405965486001JA0F"])))
        for i in draw(st.lists(st.integers(0, len(chars) - 1), max_size=4)):
            chars[i] = draw(st.sampled_from([chars[i].lower(), chars[i].upper(), " ", "-",
                                             "\u017f", "\u0131", "\uff25", chars[i] + " "]))
        return "".join(chars)
    return make()


scalar = (text | st.integers(-5, 70) | st.integers() | st.booleans() | st.none()
          | st.floats(allow_nan=False, allow_infinity=False))
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(text, inner, max_size=3), max_leaves=8)


@st.composite
def config_file(draw):
    raw = dict(GOOD)
    for name in draw(st.lists(st.sampled_from(sorted(config.FIELDS)), max_size=6)):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            raw.pop(name, None)
        elif name == "cups" or choice == 1:
            raw[name] = draw(cups_variant())
        elif config.FIELDS[name][0] in (config._PIN, config._OPTPIN, config._INT):
            raw[name] = draw(st.integers(-3, 45) | value)
        else:
            raw[name] = draw(value)
    for _ in range(draw(st.integers(0, 2))):
        raw[draw(text)] = draw(value)
    data = json.dumps(raw, ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 1]))).encode()
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.sampled_from(BYTES))
        op = draw(st.integers(0, 2))
        if op == 0:
            data = data[:at] + piece + data[at:]
        elif op == 1:
            data = data[:at] + piece + data[at + len(piece):]
        else:
            data = data[:at] + data[at + draw(st.integers(1, 4)):]
    return data


FIXED = [  # known disagreements of the two runtimes' own parsers and str methods
    b'{"a":1,}', b'{"a" 1}', b'{"a":1 "b":2}', b'{"a"::1}', b'{,}', b'[,1]', b'{"a":007}',
    b'{"a":"\\x41"}', b'{"a":"x\ty"}', b'{"a":1.}', b'{"a":null1}', b'{"a":[1,2,,3]}',
    b'{"a":"\\ud83d\\ude00"}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1} x',
    b'{"a":' + b"1" * 5000 + b"}", b"[" * 9000, b'{"a":[' + b"0," * 3000 + b"0]}",
    json.dumps(dict(GOOD, cups="e\u017f" + CUPS[2:]), ensure_ascii=False).encode(),
    json.dumps(dict(GOOD, device_name="\u3000"), ensure_ascii=False).encode(),
    json.dumps(dict(GOOD, device_name="\u00a0\u2003"), ensure_ascii=False).encode(),
    json.dumps(dict(GOOD, wifi_ssid="caf\u00e9" * 7), ensure_ascii=False).encode(),
    json.dumps(dict(GOOD, attr_cups_key="\U0001f600" * 128), ensure_ascii=False).encode(),
    json.dumps(dict(GOOD, cups=CUPS.lower())).encode(),
    b'{"device_name": "m\xc0\xafx"}', b'{"device_name": "m\xed\xa0\x80x"}',
    b'{"device_name": "m\xf4\x90\x80\x80x"}', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
] + [json.dumps(dict(GOOD, **over)).encode() for over in (  # warnings
    {"pulse_pin": 12}, {"pulse_pin": 1, "status_led_pin": 3}, {"boot_button_pin": 36},
    {"supplier_key": "a<b-secret"}, {"pulse_pin": 15, "cups": "x"})]
TEXTS = ["", "short", "supplier-secret-0001", "a\nbcdefgh", "\u017fs\u0131i" * 3, CUPS,
         CUPS.lower(), "e\u017f" + CUPS[2:], "x" * 200, "\x1b[2J\u202e\u2028" * 5]


def collect(strategy, n):
    out = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example):
        out.append(example)

    run()
    return out


def judge(data):
    warnings = []
    cfg, errors = config.parse(data, warnings)
    shown = sorted(cfg.items()) if cfg is not None and not errors else None
    return [errors, warnings, [list(kv) for kv in shown] if shown is not None else None]


def test_the_validator_gives_the_same_verdict_on_cpython_and_micropython(upy, tmp_path):
    files = FIXED + collect(config_file(), 600)
    texts = TEXTS + collect(text, 300) + collect(cups_variant(), 100)
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w") as f:
        for data in files:
            f.write("C %s\n" % data.hex())
        for t in texts:
            f.write("T %s\n" % t.encode().hex())
    r = upy("tests/unix/config_replay.py", str(corpus), heap="4M", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [json.loads(line) for line in r.stdout.splitlines()]
    want = [judge(d) for d in files] + [[escape(t), mask(t), cups_error(t)] for t in texts]
    assert len(got) == len(want)
    differ = [(case, w, g) for case, w, g in zip(files + texts, want, got) if w != g]
    assert not differ, "%d of %d differ; first: %r\n  CPython:     %r\n  MicroPython: %r" % (
        len(differ), len(want), *differ[0])
    # The corpus is not trivial: valid configs, invalid ones, and warnings all occur.
    verdicts = [w for w in want[:len(files)]]
    assert sum(1 for v in verdicts if not v[0]) >= 30
    assert sum(1 for v in verdicts if v[0] and v[0][0].startswith("config.json: ")) >= 30
    assert sum(1 for v in verdicts if v[0] and not v[0][0].startswith("config.json: ")) >= 100
    assert sum(1 for v in verdicts if v[1]) >= 5
