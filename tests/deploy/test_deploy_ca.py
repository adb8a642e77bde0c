"""`make deploy` puts the CA bundle that ships with the firmware on a meter that talks TLS to
ThingsBoard Cloud, unless CA= names another; a meter whose config names its own CA file keeps
it; `make build` makes the bundle too."""

import json
import os
import time

from deploy_support import ROOT, cups_for, make
from tools import cloud_ca

from firmware.startup import der_certificates


def cloud_config(tmp_path, **over):
    # A meter as it leaves the office for ThingsBoard Cloud: TLS, default host and CA name.
    cfg = {"wifi_ssid": "site", "wifi_password": "site-wifi-password",
           "provision_key": "deploy-profile-key", "provision_secret": "deploy-profile-secret",
           "supplier_key": "supplier-key-for-0043", "cups": cups_for(43), "pulse_pin": 4}
    cfg.update(over)
    path = tmp_path / "meter-0043.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_deploy_to_the_cloud_copies_the_shipped_bundle_as_tb_ca(tmp_path, board):
    r = make("deploy", PORT=board.port, CONFIG=cloud_config(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CA for mqtt.thingsboard.cloud: build/ca/thingsboard-cloud.der" in r.stdout
    on_board = read(os.path.join(board.root, "ca.der"))
    assert on_board == read(cloud_ca.OUT)
    assert len(der_certificates(on_board)) == 2  # as the meter will read it at boot

    # CA= overrides it, under the same name.
    from lab.certs import make_test_pki
    pki = make_test_pki(str(tmp_path / "pki"))
    r = make("deploy", PORT=board.port, CONFIG=cloud_config(tmp_path), CA=pki["ca_der"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CA for mqtt.thingsboard.cloud" not in r.stdout
    assert read(os.path.join(board.root, "ca.der")) == read(pki["ca_der"])


def test_a_config_naming_its_own_ca_file_keeps_it(tmp_path, board):
    from lab.certs import make_test_pki
    pki = make_test_pki(str(tmp_path / "pki"))
    cfg = cloud_config(tmp_path, tb_ca="own-ca.der")
    r = make("deploy", PORT=board.port, CONFIG=cfg)
    assert r.returncode != 0 and "no own-ca.der" in r.stderr  # not silently replaced
    r = make("deploy", PORT=board.port, CONFIG=cfg, CA=pki["ca_der"])
    assert r.returncode == 0, r.stderr
    r = make("deploy", PORT=board.port, CONFIG=cfg)  # later deploys leave it alone
    assert r.returncode == 0, r.stderr
    assert read(os.path.join(board.root, "own-ca.der")) == read(pki["ca_der"])
    assert "ca.der" not in board.files()


def test_plain_mqtt_and_other_hosts_get_no_bundle(tmp_path, board):
    r = make("deploy", PORT=board.port, CONFIG=cloud_config(
        tmp_path, tb_host="tb.example.net"))
    assert r.returncode != 0 and "no ca.der" in r.stderr  # their own server: their own CA
    r = make("deploy", PORT=board.port, CONFIG=cloud_config(
        tmp_path, tb_tls=False, tb_plain_ok=True))
    assert r.returncode == 0, r.stderr
    assert "ca.der" not in board.files()


def test_make_build_makes_the_bundle(tmp_path):
    if os.path.exists(cloud_ca.OUT):
        os.utime(cloud_ca.OUT, (0, 0))  # older than tools/cloud_ca.py: make must redo it
    t0 = time.time()
    r = make("build", MARCH="")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.getmtime(cloud_ca.OUT) >= t0 - 1
    txt = read(os.path.join(ROOT, "build", "ca", "thingsboard-cloud.txt")).decode()
    assert "ISRG Root X1" in txt and "ISRG Root X2" in txt
