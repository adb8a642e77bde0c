"""Provisioning against a hostile or broken server: a reply that is not a well-formed SUCCESS
never stores anything and never replaces working credentials; the exchange keeps its deadline.
(The reply rules themselves: tests/portable/test_provision_reply.py, on both runtimes.)"""

import json
import random

import pytest

from fakes import FakeBroker
from harness import Rig
from firmware import states as M
from firmware import provision as P
from firmware.store import Store

NAME = "meter-a1b2c3d4e5f6"

HOSTILE = [
    {"credentialsValue": "tok\u0000en", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"},
    {"credentialsValue": "tok\nen", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"},
    {"credentialsValue": "x" * 2000, "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"},
    {"credentialsValue": "provision", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"},
    {"credentialsValue": {"clientId": "c", "userName": "u"}, "credentialsType": "MQTT_BASIC",
     "status": "SUCCESS"},
    {"credentialsValue": {"clientId": "c", "userName": 5, "password": "p"},
     "credentialsType": "MQTT_BASIC", "status": "SUCCESS"},
    b'{"credentialsValue":"\\ud83d\\ude00","credentialsType":"ACCESS_TOKEN","status":"SUCCESS"}',
]


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class _NullLog:
    def warn(self, *a):
        pass


def stored():
    return Store(_NullLog()).read("creds")


@pytest.mark.parametrize("reply", HOSTILE)
def test_a_hostile_success_stores_nothing_and_provisioning_is_retried_with_backoff(reply):
    b = FakeBroker()
    b.provision_script = [reply, reply]
    rig = Rig(b)
    rig.run(20_000, lambda: len(b.provision_requests) >= 3)
    assert stored() is None or stored()["token"].startswith("gen-")
    t = [c[3] for c in b.connects if c[0] == "provision"]
    assert len(t) >= 3 and t[1] - t[0] >= 1000  # retry_min_s 2: the first delay in [1, 2] s
    assert "BAD_REPLY: provision reply" in rig.text()
    assert rig.run(120_000, lambda: rig.meter.state == M.RUN)  # a sane reply then works
    assert stored()["token"].startswith("gen-")


@pytest.mark.parametrize("reply", HOSTILE[:3])
def test_working_credentials_are_never_replaced_by_a_hostile_reply(reply):
    b = FakeBroker()
    rig = Rig(b)
    assert rig.run(60_000, lambda: rig.meter.state == M.RUN)
    token = stored()["token"]
    b.provision_script = [reply] * 5
    rig.meter.request_reprovision("test")  # as the RPC or the gesture asks
    assert rig.run(10 * 60_000, lambda: rig.meter.state == M.RUN)
    assert stored()["token"] == token
    assert "keeping the working credentials" in rig.text()
    assert b.connects[-1][1] == token


def test_the_reply_deadline_holds_however_the_server_stalls():
    b = FakeBroker()
    b.provision_script = [None]  # the request is taken, no reply ever comes
    rig = Rig(b, start=False)
    rig.power_up()
    rig.run(60_000, lambda: "NO_REPLY" in rig.text())
    assert "no provision reply within 10 s" in rig.text()


def test_the_reply_rules_agree_with_a_plain_oracle():
    # Random tokens from a pool of the characters that matter; the oracle is written with
    # str methods, independently of parse_reply's byte rules.
    pool = ("aZ09-_.~ \t\n\r\x00\x01\x1b\x7f\x80\x85\x9f\xa0\xe9\u20ac\ufeff\U0001f600"
            "provisn")
    rng = random.Random(13)

    def oracle(tok):
        raw = tok.encode("utf-8", "surrogatepass")
        if not tok or len(raw) > 255 or not tok.strip(" ") or tok == "provision":
            return False
        return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in tok)

    for _ in range(3000):
        n = rng.choice((0, 1, 2, 5, 9, 20, 128, 255, 256))
        tok = "".join(rng.choice(pool) for _ in range(n))
        if rng.random() < 0.05:
            tok = "provision"
        for ascii_only in (True, False):
            payload = json.dumps({"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN",
                                  "credentialsValue": tok}, ensure_ascii=ascii_only).encode()
            outcome, creds, _ = P.parse_reply(payload)
            escaped_pair = ascii_only and any(ord(c) > 0xFFFF for c in tok)
            assert (outcome == P.SUCCESS) == (oracle(tok) and not escaped_pair), (tok, payload)
