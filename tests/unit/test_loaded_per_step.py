"""firmware/connect.py (Link.open()'s body) and firmware/connecting.py (the supervisor's connect
and attributes states) are loaded for each use and unloaded after it; a heap with no room to
load them is a failed connect retried after the backoff, never an exception out of the loop."""

import builtins
import sys

import pytest

import harness
from firmware import states as M
from firmware.link import LinkError
from test_link import make


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Store's files


def _refuse(monkeypatch, name):
    # `from firmware import <name>` fails as a fragmented heap would fail the import.
    real = builtins.__import__

    def imp(mod, globals=None, locals=None, fromlist=(), level=0):
        if mod == "firmware" and fromlist and name in fromlist:
            raise MemoryError("memory allocation failed, allocating 420 bytes")
        return real(mod, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", imp)


def test_the_connect_module_is_unloaded_after_each_connect():
    # Over TLS with 1.3.4: the module is also the `ussl` umqtt imports, and nothing keeps it.
    r = make("1.3.4", tls=True)
    assert r.link.open("tb.example", 8883, "dev", "tok", "", 60, r.ctx) == 0
    assert r.link.connected
    assert "firmware.connect" not in sys.modules and "ussl" not in sys.modules


def test_no_room_for_the_connect_module_is_a_link_error(monkeypatch):
    r = make("1.8.0")
    link = r.link
    _refuse(monkeypatch, "connect")
    try:
        link.open("tb.example", 1883, "dev", "tok", "", 60)
    except LinkError as e:
        assert "not enough memory" in str(e)
    else:
        raise AssertionError("no LinkError")
    assert not link.connected


def test_no_room_for_the_connect_state_is_retried_after_the_backoff(monkeypatch):
    rig = harness.Rig()
    assert rig.run(120_000, lambda: rig.meter.state == M.CONNECT)
    with monkeypatch.context() as m:
        _refuse(m, "connecting")
        rig.run(20_000)  # retry_min_s is 2: a few retries, every one after its backoff, logged
    assert rig.meter.state == M.CONNECT
    refused = [l for l in rig.lines if "allocating 420 bytes; retrying in" in l]
    assert 1 <= len(refused) <= 5, refused
    assert rig.run(180_000, lambda: rig.meter.state == M.RUN)
    assert "firmware.connecting" not in sys.modules
