"""Fixtures for the tbsim tests: a started simulator with short timers, and a test PKI."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))              # rawmqtt
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # repo root: tools

from lab.certs import make_test_pki  # noqa: E402
from tbsim import Profile, TBSim  # noqa: E402

KEY, SECRET = "meter-key", "meter-secret"


@pytest.fixture
def make_sim():
    started = []

    def make(**kw):
        kw.setdefault("profiles", [Profile(KEY, SECRET)])
        kw.setdefault("provision_close_s", 0.5)
        sim = TBSim(**kw)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    return make_sim()


@pytest.fixture
def pki(tmp_path):
    return make_test_pki(str(tmp_path / "pki"))
