"""No storm, whatever the server answers (issue 11 §5): a server that answers every
provisioning request with SUCCESS and then refuses the issued token with CONNACK 5. The meter's
rounds (provision -> store -> connect -> refused) are bounded by its jittered backoff
(retry_min_s 1 doubling to retry_max_s 10 here), and so are its credential writes. Counted in
one minute of one run: before the fix the firmware made a round per main-loop step (569
device CONNECTs in this minute, a credential write each; 765 in 40 s in the issue).

The misbehaving server is tbsim in its "success-then-refuse" provisioning mode (not
ThingsBoard: a broken server, tbsim/README.md).
"""

import time

import pytest

from e2e_support import KEY, SECRET
from tbsim import Profile, TBSim

WINDOW_S = 60
# Backoff 1 s doubling to 10 s, each delay drawn from the upper half of its range: the shortest
# delays are 0.5, 1, 2, 4, then 5 s. At most 1 + 4 + (60 - 7.5) / 5 = 15.5 rounds a minute,
# however fast the server answers; 16 with the round already under way at the end.
MAX_ROUNDS = 16


@pytest.fixture
def refusing():
    s = TBSim(profiles=[Profile(KEY, SECRET)], provision_close_s=5.0,
              provisioning="success-then-refuse")
    s.start()
    yield s
    s.stop()


def test_success_then_connack_5_is_paced_by_the_backoff(refusing, meters):
    sim = refusing
    m = meters(sim)
    t0 = time.time()
    m.power_on()
    time.sleep(WINDOW_S)
    m.power_cut()
    connects = [e for e in sim.events("connect") if t0 <= e["t"] <= t0 + WINDOW_S]
    device = [e for e in connects if e["session"] == "device"]
    provision = [e for e in connects if e["session"] == "provision"]
    writes = m.count(r"provision: SUCCESS: token credentials stored", t0)  # one write each
    print("storm: per minute %d device CONNECTs, %d provisioning CONNECTs, %d credential writes"
          % (len(device), len(provision), writes))
    assert all(e["returnCode"] == 5 for e in device)
    assert 4 <= len(device) <= MAX_ROUNDS, len(device)
    assert len(provision) <= MAX_ROUNDS + 1 and writes <= MAX_ROUNDS + 1
    gaps = [b["t"] - a["t"] for a, b in zip(device, device[1:])]
    assert min(gaps) >= 0.4, gaps  # never faster than the shortest backoff delay (0.5 s)
    assert max(gaps) >= 4.5, gaps  # and growing
    assert m.count(r"credentials refused \(CONNACK 5\).*provisioning again in \d+ s", t0) >= 4
