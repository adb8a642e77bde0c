"""Power cuts (SIGKILL) at random instants through first boot, normal running, the power-cycle
gesture and the re-provisioning it asks for.

Four meters, 50 cuts each (200 per run), in parallel, with the gesture on (4 power-ups within
10 s each: the defaults). Random up-times of 0.05-1.5 s make gestures by themselves; each meter
also plays one deliberate gesture and cuts the re-provisioning it starts while the request for
credentials is on its way (the server holds its answer meanwhile: see ASK). The seed is printed;
set E2E_SEED to replay a run. Every run must converge: exactly one device per meter on the
server; the attributes received at least once and never again once their PUBACK was recorded
on flash, unless a re-provisioning request cleared the record; credentials on flash, once a
meter has them, always the working ones (never lost, never replaced by anything the platform
refuses); a pulse index that never goes backwards, and no cut losing more than the documented
bound: the pulses of the last persist_interval_s (plus the step in which the write happens).
At the end every meter reports with its working credentials. One of the four came
provisioned from the factory with a configured device token the platform does not know: each
re-provisioning it serves ends in FAILURE and a refused token, and must go straight back to
the credentials on flash."""

import binascii
import json
import os
import random
import threading
import time

from e2e_support import KEY, base_config, device_name
from lab.meterhost import PulseTrain

METERS = 4
CUTS = 50
RATE = 20  # pulses/s (72 kW at 1000 imp/kWh: far above a household, to stress the bound)
PERSIST_S = 10
BOUND = RATE * (PERSIST_S + 2)
REQUESTED = "re-provisioning requested"
ASK = "provision: requesting credentials"  # the re-provisioning exchange starts
# The aimed cut: at a random instant up to AIM_S after ASK, while the server holds every
# provisioning answer HOLD_S (tbsim's provision_delay_s): the cut lands in the exchange unless
# the host is HOLD_S - AIM_S late (generous on a loaded 2-core machine). Without it the
# exchange takes about 0.1 s from ASK to the acknowledged attributes, 0.5 s from the boot: a
# cut at a random instant after the request (0-1.5 s, as before) missed it two times in three,
# and a seed (E2E_SEED=10736025) had one meter with no cut in any of its 13 re-provisionings.
AIM_S = 0.5
HOLD_S = 2.0


def record(obj):
    # A state record as firmware/store.py writes it: JSON, newline, crc32 hex, newline.
    body = json.dumps(obj).encode()
    return body + b"\n%08x\n" % (binascii.crc32(body) & 0xFFFFFFFF)


def index_of(m):
    rec = m.record("pulses")
    return rec["index"] if rec else 0


def gesture_count(m):
    rec = m.record("boot")
    return rec.get("n", 0) if rec else 0


class Hold:
    """The server holds its provisioning answers while any meter aims a cut at one; the other
    meters' exchanges in that time are held too (a slow platform: harmless, and the seeded
    random cuts otherwise meet the exchanges as fast as tbsim answers them)."""

    def __init__(self, sim):
        self._sim, self._n, self._lock = sim, 0, threading.Lock()

    def __enter__(self):
        with self._lock:
            self._n += 1
            self._sim.provision_delay_s = HOLD_S

    def __exit__(self, *exc):
        with self._lock:
            self._n -= 1
            if not self._n:
                self._sim.provision_delay_s = 0.0


def exercise(sim, m, rng, report, working, hold):
    name = device_name(m.uid)
    train = PulseTrain(m, 1000, lambda t: RATE * 3600.0)
    train.start()
    st = {"prev": 0, "marker_posts": None, "marker_requests": None, "had_creds": False,
          "worst": 0, "mid_gesture": 0, "mid_reprovisioning": 0, "requests": 0,
          "back_to_working": 0}

    def cycle(cut, wait=(), up=None):
        # One power-up and one cut, with every check. wait: console lines to wait for first, in
        # turn. Returns this boot's console text.
        boot_index = index_of(m)
        assert boot_index >= st["prev"], (cut, boot_index, st["prev"])  # never backwards
        st["prev"] = boot_index
        before = m.pulses_delivered
        t_on = time.time()
        m.power_on()
        for line in wait:
            assert m.wait_for(line, 15, t_on), (cut, line, m.text(t_on))
        if up is None:
            up = rng.uniform(0.05, 1.5) if rng.random() < 0.8 else rng.uniform(1.5, 12.0)
        time.sleep(up)
        m.power_cut()
        boot = m.text(t_on)
        if REQUESTED in boot and "attributes: acknowledged" not in boot.split(REQUESTED)[-1]:
            st["mid_reprovisioning"] += 1
        if 0 < gesture_count(m) < 4:
            st["mid_gesture"] += 1
        after = index_of(m)
        delivered = m.pulses_delivered - before
        loss = boot_index + delivered - after
        assert 0 <= loss <= BOUND, (cut, up, boot_index, delivered, after)
        st["worst"] = max(st["worst"], loss)
        creds = m.record("creds")
        # The only credentials this device has. Once on flash they stay, whatever the gesture
        # and the cuts did.
        assert creds in (None, working), (cut, creds)
        assert creds is not None or not st["had_creds"], (cut, "working credentials lost")
        st["had_creds"] = creds is not None
        posts = len([e for e in sim.events("attributes") if e.get("device") == name])
        requests = m.count(REQUESTED)
        if st["marker_posts"] is not None and posts != st["marker_posts"]:
            assert requests > st["marker_requests"], (cut, "attributes sent again after their PUBACK")
        if m.record("attrs") is not None:
            st["marker_posts"], st["marker_requests"] = posts, requests
            assert posts >= 1
        return boot

    deliberate = rng.randrange(10, CUTS - 10)
    try:
        for cut in range(CUTS):
            if cut == deliberate:
                # A boot past the gesture window (the count back to 0, a pending request
                # served), then four power-ups, each counted (its boot line is out) and cut
                # within 2 s, and a cut in the middle of the re-provisioning the fourth asks for:
                # its request for credentials sent or on its way, the answer not read.
                cycle(cut, [r"state: \S+ -> run"], 11.0)
                for _ in range(3):
                    cycle(cut, [r"boot: device"], rng.uniform(0.2, 2.0))
                with hold:
                    boot = cycle(cut, [REQUESTED, ASK], rng.uniform(0.0, AIM_S))
                answer = [l for l in boot.split(ASK)[-1].splitlines() if " provision: " in l]
                assert not answer, (cut, "the aimed cut came after the answer", boot)
            else:
                cycle(cut)
        t_on = time.time()
        m.power_on()
        assert m.wait_for(r"state: \S+ -> run", 60, t_on), m.text(t_on)[-3000:]
        assert sim.wait_for(lambda: (sim.device(name)["latestTelemetry"].get("pulses") or -1)
                            >= index_of(m), 30), (name, sim.device(name)["latestTelemetry"])
        assert m.record("creds") == working
        st["requests"] = m.count(REQUESTED)
        st["back_to_working"] = m.count(r"reconnecting with the working credentials")
    finally:
        train.stop()
    report[m.uid] = {k: st[k] for k in ("worst", "mid_gesture", "mid_reprovisioning", "requests",
                                        "back_to_working", "marker_posts")}
    report[m.uid]["boots"] = m.boots


def test_two_hundred_power_cuts_converge_with_the_gesture_on(sim, meters):
    seed = int(os.getenv("E2E_SEED") or random.randrange(1 << 30))
    print("power-cut seed: E2E_SEED=%d" % seed)
    ms = [meters(base_config(sim, access_token="device-token-%04d-%d" % (i, seed),
                             persist_interval_s=PERSIST_S),
                 uid="c0ffee%06d" % i)
          for i in range(METERS)]
    working = [{"type": "ACCESS_TOKEN", "token": m.config["access_token"]} for m in ms]
    # The last meter came from the factory provisioned (device made by an administrator, its
    # token on flash), with an access_token in its config the platform does not know: every
    # gesture gets FAILURE (the name exists), then CONNACK 5 for that token, and must go
    # straight back to the token on flash. (Before the fix it waited retry_slow_s, an hour,
    # and with the request kept on flash every boot after did the same.)
    factory = {"type": "ACCESS_TOKEN", "token": "factory-token-%d" % seed}
    sim.add_device(device_name(ms[-1].uid), profile_key=KEY, token=factory["token"])
    ms[-1].put_file("state/creds.json", record(factory))
    working[-1] = factory
    report, errors = {}, []
    hold = Hold(sim)

    def run(i, m):
        try:
            exercise(sim, m, random.Random(seed * 100 + i), report, working[i], hold)
        except BaseException as e:  # noqa: BLE001 - re-raised below with the seed
            errors.append((m.uid, repr(e)))

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(ms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "E2E_SEED=%d: %s" % (seed, errors)
    names = sorted(d["name"] for d in sim.devices())
    assert names == sorted(device_name(m.uid) for m in ms), ("E2E_SEED=%d" % seed, names)
    for m in ms:
        name = device_name(m.uid)
        seen = [p["values"]["pulses"] for p in sim.telemetry(name) if "pulses" in p["values"]]
        assert seen == sorted(seen), ("E2E_SEED=%d" % seed, name, "index went backwards")
        assert report[m.uid]["marker_posts"] is not None, ("never acknowledged", name)
        assert sim.device(name)["clientAttributes"]
    for m, w in zip(ms, working):
        assert sim.device(device_name(m.uid))["credentials"] == w["token"]
    print("power-cut report:", report)
    # What the run went through: gestures, and cuts in the middle of them and of the
    # re-provisioning they asked for (each meter aims at least one of the latter).
    assert all(r["requests"] >= 1 and r["mid_reprovisioning"] >= 1 for r in report.values()), report
    assert sum(r["mid_gesture"] for r in report.values()) >= METERS, report
    assert report[ms[-1].uid]["back_to_working"] >= 1, report
