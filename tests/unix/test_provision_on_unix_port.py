"""The provisioning-reply rules give the same verdict on MicroPython as on CPython, over
generated replies (the same corpus, replayed on the Unix port)."""

import binascii
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "shims"))
sys.path.insert(0, ROOT)

from firmware.provision import parse_reply  # noqa: E402

# The characters that matter to the rules: controls (C0, DEL, C1), non-ASCII of every UTF-8
# length, a character outside the BMP, spaces, JSON's own escapes.
_POOL = ("aZ09-_.~ \t\n\r\x00\x01\x1b\x7f\x80\x85\x9f\xa0\xe9\u20ac\ufeff\U0001f600\"\\/"
         "provisn")


def _corpus(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.choice((0, 1, 2, 5, 9, 20, 64, 255, 256))
        text = "".join(rng.choice(_POOL) for _ in range(size))
        ascii_only = rng.random() < 0.5
        kind = rng.random()
        if kind < 0.5:
            body = {"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN", "credentialsValue": text}
        elif kind < 0.8:
            fields = {"clientId": text[:20], "userName": text[20:40], "password": text[40:60]}
            for key in list(fields):
                if rng.random() < 0.1:
                    del fields[key]
            body = {"status": "SUCCESS", "credentialsType": "MQTT_BASIC", "credentialsValue": fields}
        else:
            body = {"status": rng.choice(("FAILURE", "NOT_FOUND", text)), "errorMsg": text}
        payload = json.dumps(body, ensure_ascii=ascii_only).encode()
        if rng.random() < 0.05:
            payload = payload[:rng.randrange(len(payload))]  # cut short
        out.append(payload)
    return out


def test_generated_replies_get_the_same_verdict_on_both_runtimes(upy, tmp_path):
    corpus = _corpus(1500, 29)
    path = tmp_path / "replies.txt"
    path.write_text("".join(binascii.hexlify(p).decode() + "\n" for p in corpus))
    r = upy("tests/unix/provision_verdicts.py", str(path), heap="2M", timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    theirs = r.stdout.splitlines()
    assert len(theirs) == len(corpus)
    outcomes = set()
    for payload, line in zip(corpus, theirs):
        outcome, _creds, detail = parse_reply(payload)
        outcomes.add(outcome)
        assert line == "%s|%s" % (outcome, detail), payload
    assert outcomes == {"SUCCESS", "BAD_REPLY", "FAILURE", "NOT_FOUND"}  # the corpus reaches all
