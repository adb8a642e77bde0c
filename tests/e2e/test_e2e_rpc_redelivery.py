"""ThingsBoard sends a delivered but unanswered two-way RPC again, with the same request id, to
the next session that subscribes (default BURST strategy, docs/thingsboard.md §14.8). A meter
that acted on a `reboot` and reset before its reply was processed gets the same request after
it comes back: it must answer it, not reset again (issue 17).

The server here is tbsim, which redelivers as ThingsBoard does (tbsim/sim.py
`_deliver_pending_rpcs`), with one fault added: the first answer to each RPC is lost on its way
to the device actor, as when the meter resets right after its reply."""

import json
import threading
import time

import pytest

from e2e_support import KEY, SECRET, base_config, device_name
from tbsim import Profile, TBSim

NAME = device_name()


class FirstAnswerLost(TBSim):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.answers_lost = set()

    def _rpc_answered(self, name, request_id, payload):
        if (name, request_id) not in self.answers_lost:
            self.answers_lost.add((name, request_id))
            self.store.event("rpc-response-lost", device=name, requestId=request_id,
                             response=payload.decode("utf-8", "replace"))
            return
        super()._rpc_answered(name, request_id, payload)


@pytest.fixture
def redelivering():
    s = FirstAnswerLost(profiles=[Profile(KEY, SECRET)], provision_close_s=5.0)
    s.start()
    yield s
    s.stop()


def test_a_reboot_delivered_again_after_the_reset_is_answered_not_acted_on(redelivering, meters):
    sim = redelivering
    m = meters(base_config(sim))
    m.power_on()
    assert m.wait_for(r"state: \S+ -> run", 30), m.text()
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(sim.rpc(NAME, "reboot", timeout_s=60)))
    t0 = time.time()
    caller.start()
    caller.join(75)
    assert answer == {"result": "already done"}, (answer, m.text(t0))
    lost = sim.events("rpc-response-lost")
    assert [e["resend"] for e in sim.events("rpc-sent")] == [False, True]  # ThingsBoard's BURST
    assert [json.loads(e["response"]) for e in lost] == [{"result": "rebooting"}]
    assert m.wait_for(r"RPC \d+: reboot already done", 5, t0)
    time.sleep(3)
    # One reset for one request: the firmware started twice in all (power-up, the reset).
    assert m.count(r"main: meter firmware starting") == 2, m.text(t0)
    assert m.count(r"boot: .*after a reset") == 1
    assert m.state == "run"
