"""The running meter keeps only the config fields it reads (firmware/wiring.py _running): the
validated config's other fields, their keys and the dict's table would stay on the heap for
nothing (docs/benchmarks.md, the live heap while running)."""

import os
import re

import pytest

from harness import Rig, make_cfg
from firmware import config, wiring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The modules that run with the meter's config: the supervisor and what it loads for a step or
# a session, and the pipeline (firmware/report.py, selftest.py, startup.py, setup_*.py read the
# whole config file of their own; wiring.py builds with it at boot).
_RUNNING_MODULES = ("supervisor", "connecting", "connect", "provision", "attributes",
                    "setup_request", "pipeline", "remote", "link", "sync", "clock", "gesture",
                    "led", "ota", "ota_check", "backlog", "backlog_flash", "telemetry")
_READ = re.compile(r'cfg(?:\.get\(|\[)"(\w+)"')


@pytest.fixture(autouse=True)
def _flash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Store writes state/ here: this test's flash


def test_the_running_meter_keeps_only_the_fields_it_reads():
    rig = Rig()
    sup = rig.meter
    assert sup.cfg is sup.pipeline._cfg  # one small dict, shared
    for field in ("tb_ca", "tb_tls", "pulse_pin", "pulse_edge", "wdt_timeout_s",
                  "buffer_points", "status_led_pin", "reprovision_cycles", "device_name",
                  "setup_timeout_s", "ntp_interval_s", "mqtt_client_id"):
        assert field not in sup.cfg, field  # used at boot only
    assert len(sup.cfg) < len(rig.cfg) * 2 // 3
    assert all(sup.cfg[k] is rig.cfg[k] for k in sup.cfg)  # the same values, not copies


def test_every_field_a_running_module_reads_is_kept():
    # The topics are in the config only when given (firmware/config.py), credentials only
    # when ready ones are.
    kept = set(wiring._running(make_cfg(telemetry_topic="v1/devices/me/telemetry",
                                        attributes_topic="v1/devices/me/attributes")))
    kept.add("credentials")
    read = {}
    for name in _RUNNING_MODULES:
        with open(os.path.join(ROOT, "firmware", name + ".py")) as f:
            for field in _READ.findall(f.read()):
                read.setdefault(field, name)
    assert read, "the pattern finds nothing: the firmware's way of reading cfg changed"
    missing = {f: m for f, m in read.items() if f not in kept}
    assert not missing, "read while running but not kept by wiring._running: %s" % missing
    assert read.keys() - {"credentials"} <= set(config.FIELDS)


def test_ready_credentials_in_the_config_are_kept_for_the_supervisor():
    rig = Rig(start=False)
    cfg = dict(rig.cfg, credentials={"type": "ACCESS_TOKEN", "token": "tok"})
    assert wiring._running(cfg)["credentials"] is cfg["credentials"]
    assert "credentials" not in wiring._running(rig.cfg)
