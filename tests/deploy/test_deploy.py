"""`make deploy` and `make status` against the fake board, then the deployed files booted on
the Unix port against tbsim; `make console`; package.json and the frozen manifest."""

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pytest

from deploy_support import MPREMOTE, PY, ROOT, cups_for, make, meterconfig, run, wait_until
from tools import build_device, deploy as deploytool
from lab.meterhost import VirtualMeter
from tbsim import Profile, TBSim

KEY, SECRET = "deploy-profile-key", "deploy-profile-secret"
SUPPLIER = "supplier-key-for-0042"
WIFI_PASSWORD = "site-wifi-password"
UID = "0a0b0c0d0e42"


@pytest.fixture
def sim():
    s = TBSim(profiles=[Profile(KEY, SECRET)], provision_close_s=5.0)
    s.start()
    yield s
    s.stop()


def make_config(tmp_path, sim_port, name="meter-0042", **extra):
    args = ["one", "--out", str(tmp_path / "devices"), "--name", name, "--cups", cups_for(42),
            "--supplier-key", SUPPLIER, "--wifi-ssid", "site", "--wifi-password", WIFI_PASSWORD,
            "--provision-key", KEY, "--provision-secret", SECRET, "--pulse-pin", "4",
            "--tb-host", "127.0.0.1", "--tb-port", str(sim_port), "--generate-token", "--force",
            "--set", "tb_tls=false", "--set", "tb_plain_ok=true",
            "--set", "publish_interval_s=5", "--set", "health_interval_s=0"]
    for k, v in extra.items():
        args += ["--set", "%s=%s" % (k, v)]
    r = meterconfig(*args)
    assert r.returncode == 0, r.stderr
    return str(tmp_path / "devices" / ("%s.json" % name))


def snapshot(board):
    return {rel: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for rel, p in board.files().items()}


def test_deploy_status_then_the_deployed_files_boot_and_report(tmp_path, board, sim):
    cfg_path = make_config(tmp_path, sim.mqtt_port)  # with a generated device token
    r = make("deploy", PORT=board.port, CONFIG=cfg_path)  # MARCH defaults to xtensawin
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing it to lib/umqtt" in r.stdout
    files = board.files()
    tree = os.path.join(ROOT, "build", "device-xtensawin")
    expected = {rel for _l, rel in deploytool.device_files(tree)} | {
        "config.json", "lib/umqtt/__init__.mpy", "lib/umqtt/simple.mpy",
        "lib/microdot/__init__.mpy", "lib/microdot/microdot.mpy"}  # setup mode's page server
    assert set(files) == expected
    for local, rel in deploytool.device_files(tree) + deploytool.umqtt_files(tree) + \
            deploytool.lib_files(tree, "microdot"):
        with open(local, "rb") as a, open(files[rel], "rb") as b:
            assert a.read() == b.read(), rel
    with open(cfg_path, "rb") as a, open(files["config.json"], "rb") as b:
        assert a.read() == b.read()
    # deploy ends with machine.reset() (mpremote does not wait for it)
    assert wait_until(lambda: "fakeboard: hard reset" in board.events())
    assert "%d file(s) copied, 0 unchanged" % len(expected) in r.stdout

    # Again: nothing changed, nothing copied, nothing rewritten.
    before = snapshot(board)
    r = make("deploy", PORT=board.port, CONFIG=cfg_path)
    assert r.returncode == 0 and "0 file(s) copied, %d unchanged" % len(expected) in r.stdout
    assert snapshot(board) == before

    # A changed config: only config.json travels.
    make_config(tmp_path, sim.mqtt_port, pulses_per_kwh=800)  # rewrites the same file
    r = make("deploy", PORT=board.port, CONFIG=cfg_path)
    assert r.returncode == 0 and "1 file(s) copied" in r.stdout, r.stdout + r.stderr
    after = snapshot(board)
    assert [k for k in after if after[k] != before[k]] == ["config.json"]

    # Status of a meter that never ran: config summary, secrets masked.
    r = make("status", PORT=board.port)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    token = json.load(open(cfg_path))["access_token"]
    for secret in (SUPPLIER, WIFI_PASSWORD, KEY, SECRET, token):
        assert secret not in out
    assert "meter-0042" in out and cups_for(42) in out and "800 per kWh" in out
    assert "provisioned       no" in out and "not sent yet" in out
    assert "su...42" in out and "heap free" in out
    title, version, _source = build_device.firmware_version()  # stamped by make deploy's build
    assert "firmware          %s %s\n" % (title, version) in out, out  # no credentials yet
    # ...and the board is reset afterwards, so the meter runs again.
    assert wait_until(lambda: board.events().count("fakeboard: hard reset") == 4)

    # Boot what was deployed: the board's own main.py, firmware/*.mpy and lib/umqtt on the
    # Unix port, with the deployed config.json on its flash, against the ThingsBoard simulator.
    with open(files["config.json"], "rb") as f:
        raw = f.read()
    m = VirtualMeter(str(tmp_path / "run"), json.loads(raw), device_dir=board.root, uid=UID,
                     files={"config.json": raw})
    try:
        m.power_on()
        assert m.wait_for(r"state: attributes -> run", 40), m.text()
        assert sim.wait_for(lambda: sim.device("meter-0042")["clientAttributes"])
        assert sim.device("meter-0042")["clientAttributes"]["CUPs"] == cups_for(42)
        m.pulse(5)
        assert m.wait_for(r"pattern run", 5)
        creds, attrs = m.record("creds"), m.record("attrs")
        assert creds == {"type": "ACCESS_TOKEN", "token": token}  # the device-supplied one
        assert sim.wait_for(lambda: sim.device("meter-0042")["latestTelemetry"].get(
            "current_fw_version") == version)
        raw_state = {n: m.read_file("state/%s.json" % n) for n in ("creds", "attrs", "fwver")}
    finally:
        m.close()
    text = m.text()
    assert "Traceback" not in text and "MemoryError" not in text
    for secret in (SUPPLIER, WIFI_PASSWORD, SECRET, token):
        assert secret not in text

    # The state that boot left on flash, put on the board: status now tells the story.
    os.makedirs(os.path.join(board.root, "state"), exist_ok=True)
    for n, data in raw_state.items():
        with open(os.path.join(board.root, "state", n + ".json"), "wb") as f:
            f.write(data)
    r = make("status", PORT=board.port)
    assert r.returncode == 0, r.stderr
    assert "provisioned       yes (ACCESS_TOKEN)" in r.stdout, r.stdout
    assert "attributes        sent, current" in r.stdout
    assert "firmware          %s %s, reported to ThingsBoard" % (title, version) in r.stdout
    assert creds["token"] not in r.stdout


def test_bad_config_is_refused_before_the_board_is_touched(tmp_path, board):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"wifi_ssid": "site", "cups": "ES00", "pulse_pin": 4}))
    r = make("deploy", PORT=board.port, CONFIG=str(bad))
    assert r.returncode != 0
    assert "cups: must be 20 or 22 characters (ES + 16 digits + 2 check letters [+ 2]), got 4" \
        in r.stderr
    assert "provision_key: required" in r.stderr and "nothing was sent" in r.stderr
    assert board.files() == {} and board.events() == []
    r = make("deploy", PORT=board.port)
    assert r.returncode != 0 and "no CONFIG given" in r.stderr
    r = make("deploy", CONFIG=str(bad))
    assert r.returncode != 0 and "no PORT given" in r.stderr
    # Only the command line picks the board, never a PORT left in the environment.
    r = run(["make", "-s", "status"], env=dict(os.environ, PORT=board.port))
    assert r.returncode != 0 and "no PORT given" in r.stderr
    assert board.events() == []


def test_tls_needs_a_der_ca_and_copies_it_as_tb_ca(tmp_path, board):
    from lab.certs import make_test_pki  # the tests' own throw-away CA
    cfg_path = make_config(tmp_path, 8883, tb_tls="true", tb_ca="server-ca.der")
    r = make("deploy", PORT=board.port, CONFIG=cfg_path)
    assert r.returncode != 0 and "no server-ca.der" in r.stderr
    assert board.files() == {}  # only asked, nothing written
    pki = make_test_pki(str(tmp_path / "pki"))
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, CA=pki["ca_pem"])
    assert r.returncode != 0 and "is PEM; the board needs DER" in r.stderr
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, CA=pki["ca_der"])
    assert r.returncode == 0, r.stderr
    with open(os.path.join(board.root, "server-ca.der"), "rb") as f, open(pki["ca_der"], "rb") as g:
        assert f.read() == g.read()


def test_umqtt_in_the_firmware_is_not_copied_and_stale_sources_are_removed(tmp_path,
                                                                          board_factory):
    frozen = tmp_path / "frozen"
    shutil.copytree(os.path.join(ROOT, "lib", "umqtt"), frozen / "umqtt")
    b = board_factory(frozen=str(frozen))
    os.makedirs(os.path.join(b.root, "firmware"))
    with open(os.path.join(b.root, "firmware", "supervisor.py"), "w") as f:
        f.write("raise ImportError('an old source copy')\n")  # would shadow supervisor.mpy
    cfg_path = make_config(tmp_path, 1883)
    r = make("deploy", PORT=b.port, CONFIG=cfg_path)
    assert r.returncode == 0, r.stderr
    assert "umqtt.simple is built into the board's firmware; not copied" in r.stdout
    assert "removed firmware/supervisor.py" in r.stdout
    files = b.files()
    assert not any(f.startswith("lib/umqtt") for f in files)
    assert "lib/microdot/microdot.mpy" in files  # no image has it: always copied
    assert "firmware/supervisor.py" not in files and "firmware/supervisor.mpy" in files


def test_frozen_deploy_copies_only_main_boot_and_config(tmp_path, board):
    cfg_path = make_config(tmp_path, 1883)
    assert make("deploy", PORT=board.port, CONFIG=cfg_path).returncode == 0
    r = make("deploy", PORT=board.port, CONFIG=cfg_path, FROZEN="1")
    assert r.returncode == 0, r.stderr
    assert not any(f.startswith("firmware") for f in board.files())  # would shadow the image
    assert {"main.py", "boot.py", "config.json"} <= set(board.files())


def test_incompatible_boards_are_refused(tmp_path):
    tree = os.path.join(ROOT, "build", "device-xtensawin")
    build_device.build(tree, "xtensawin")
    files = deploytool.device_files(tree)
    esp32 = {"mpy": 6 | (3 | 10 << 2) << 8, "version": [1, 29, 0]}
    deploytool.check_board(esp32, files)  # the pinned release: fine
    with pytest.raises(deploytool.DeployError, match="loads .mpy v5.*make flash"):
        deploytool.check_board({"mpy": 5, "version": [1, 19, 1]}, files)
    native = tmp_path / "native.mpy"  # what mpy-cross makes from @micropython.native code
    native.write_bytes(b"M\x06" + bytes([3 | 10 << 2]) + b"\x1f")
    with pytest.raises(deploytool.DeployError, match="native code for xtensawin; the board "
                                                     "is x64"):
        deploytool.check_board({"mpy": 2822, "version": [1, 29, 0]},
                               [(str(native), "firmware/fast.mpy")])
    deploytool.check_board(esp32, [(str(native), "firmware/fast.mpy")])


def test_status_without_firmware_says_so(board):
    r = make("status", PORT=board.port)
    assert r.returncode != 0 and "no meter firmware on the board" in r.stderr


def test_console_opens_the_repl(board):
    master, slave = pty.openpty()
    p = subprocess.Popen(["make", "--no-print-directory", "-s", "console", "PORT=" + board.port],
                         cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    buf = b""
    try:
        deadline = time.time() + 20
        sent = False
        while b"42" not in buf.split(b"6 * 7", 1)[-1] or not sent:
            assert time.time() < deadline, buf
            if not sent and b"Connected to MicroPython" in buf:
                time.sleep(0.3)
                os.write(master, b"\r")
                os.write(master, b"print(6 * 7)\r")
                sent = True
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                buf += os.read(master, 4096)
        os.write(master, b"\x1d")  # Ctrl-] leaves mpremote's REPL
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    r = make("console")
    assert r.returncode != 0 and "no PORT given" in r.stderr


def test_make_build_package_json_lets_mip_install_from_the_checkout(board):
    r = make("build")
    assert r.returncode == 0, r.stderr
    assert "package.json written" in r.stdout and "manifest.py" in r.stdout
    tree = os.path.join(ROOT, "build", "device-xtensawin")
    for _l, rel in deploytool.device_files(tree):
        assert os.path.exists(os.path.join(tree, rel))
    with open(os.path.join(ROOT, "package.json")) as f:
        pkg = json.load(f)
    targets = {t for t, _src in pkg["urls"]}
    srcs = {rel.replace(os.sep, "/") + ".py" for _s, rel in build_device.sources(board=True)
            if rel.startswith("firmware")}
    # bootslot.py: the boot loader beside main.py, outside the package an OTA update replaces
    assert targets == srcs | {"main.py", "boot.py", "bootslot.py"}
    assert "firmware/hal/unix.py" not in targets
    r = run([MPREMOTE, "connect", board.port, "mip", "install", "--target", ".",
             os.path.join(ROOT, "package.json")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(board.files()) == targets
    r = run([MPREMOTE, "connect", board.port, "exec",
             "from firmware import config; print(len(config.FIELDS))"])
    assert r.returncode == 0 and r.stdout.strip().isdigit(), r.stdout + r.stderr
    # The stamped version travels with mip too, not the checkout's development default.
    title, version, _source = build_device.firmware_version()
    assert pkg["version"] == version
    assert ["firmware/version.py", "build/gen/firmware/version.py"] in pkg["urls"]
    r = run([MPREMOTE, "connect", board.port, "exec",
             "from firmware import version; print(version.TITLE, version.VERSION)"])
    assert r.stdout.split() == [title, version], r.stdout + r.stderr


def test_frozen_manifest_freezes_every_firmware_module(tmp_path):
    # Executed the way micropython/tools/manifestfile.py does: in the manifest's folder, with
    # its functions; a port manifest stands in for $(PORT_DIR)/boards/manifest.py.
    frozen, included, paths = [], [], {}

    def include(path, **kw):
        included.append(path)

    def package(name, files=None, base_path=".", opt=None):
        assert opt == 2  # -O2, as `make deploy` compiles
        for f in files:  # relative to the package, as manifestfile.py takes them
            assert os.path.exists(os.path.join(base_path, name, f)), f
            frozen.append(name + "/" + f)
            paths[name + "/" + f] = os.path.join(base_path, name, f)

    def module(path, base_path=".", opt=None):
        assert opt == 2
        frozen.append(path)  # frozen under its own path: firmware/version.py -> firmware.version
        paths[path] = os.path.join(base_path, path)

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with open("manifest.py") as f:
            exec(f.read(), {"include": include, "package": package, "require": None,
                            "module": module, "metadata": None, "freeze": None})
        with open(paths["firmware/version.py"]) as f:
            stamped = f.read()
    finally:
        os.chdir(cwd)
    assert included == ["$(PORT_DIR)/boards/manifest.py"]  # keeps the port's umqtt.simple
    srcs = {rel.replace(os.sep, "/") + ".py" for _s, rel in build_device.sources(board=True)
            if rel.startswith("firmware")}
    assert set(frozen) == set(srcs) | {"microdot/__init__.py", "microdot/microdot.py"}
    assert "firmware/hal/unix.py" not in srcs and "firmware/hal/unix_ap.py" not in srcs
    assert "firmware/hal/esp32.py" in srcs
    # The image carries the version stamped from this checkout, not the development default.
    title, version, _source = build_device.firmware_version()
    assert paths["firmware/version.py"] != "./firmware/version.py"
    assert "TITLE = %r\nVERSION = %r\n" % (title, version) in stamped and version != "dev"


def test_an_esp32_gets_no_unix_port_hal(tmp_path):
    tree = str(tmp_path / "tree")
    build_device.build(tree, "xtensawin")
    files = deploytool.device_files(tree)
    assert "firmware/hal/unix.mpy" in [r for _l, r in files]  # the tree serves Unix-port boards
    esp32 = [r for _l, r in deploytool.for_platform(files, "esp32")]
    assert "firmware/hal/unix.mpy" not in esp32 and "firmware/hal/esp32.mpy" in esp32
    assert "firmware/hal/unixrtc.mpy" not in esp32  # the Unix HAL's RTC model
    assert "firmware/hal/unix_ap.mpy" not in esp32 and "firmware/hal/esp32_ap.mpy" in esp32
    assert "firmware/hal/unix_faults.mpy" not in esp32  # its flash faults
    assert len(esp32) == len(files) - len(build_device.UNIX_ONLY)
    board = tmp_path / "board"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_device.py"),
                        str(board), "--march", "xtensawin", "--board"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert not (board / "firmware" / "hal" / "unix.mpy").exists()
    assert not (board / "firmware" / "hal" / "unixrtc.mpy").exists()
    assert not (board / "firmware" / "hal" / "unix_ap.mpy").exists()
    assert not (board / "firmware" / "hal" / "unix_faults.mpy").exists()
    assert (board / "firmware" / "hal" / "esp32.mpy").exists()
