"""One way of masking secrets everywhere (issue 15): the firmware's mask() is the rule; the
tools, make status and lab/sim import it, and tbsim (which imports nothing from the firmware)
keeps a copy that must give the same text for every secret."""

import os
import re

from hypothesis import given, settings, strategies as st

from firmware.log import mask
from tbsim.store import mask as tbsim_mask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet=st.characters(codec="utf-8"), max_size=12))
def test_tbsim_masks_exactly_as_the_firmware(secret):
    assert tbsim_mask(secret) == mask(secret)
    shown = mask(secret)
    assert all(32 <= b < 127 for b in shown.encode())  # one printable line, whatever it holds
    plain = all(" " <= c <= "~" for c in secret[:2] + secret[-2:])
    assert shown == (secret[:2] + "..." + secret[-2:] if len(secret) >= 8 and plain else "...")


def test_the_forms_are_the_documented_ones():
    for m in (mask, tbsim_mask):
        assert m("supplier-secret-0001") == "su...01"
        assert m("short") == "..."
        assert m("a\nbcdefg\\") == "..."  # a newline among the characters shown
        assert m("ab\ncdefg\\") == "ab...g\\"


def test_no_other_masking_rule_in_the_repository():
    # A second rule ("***", "si***et", a slice of its own) is how the three forms came about.
    defs, stars = [], []
    for top in ("firmware", "tools", "tbsim", "lab", "bench", "main.py", "boot.py"):
        base = os.path.join(ROOT, top)
        paths = [base] if base.endswith(".py") else [
            os.path.join(d, f) for d, _s, fs in os.walk(base) for f in fs if f.endswith(".py")]
        for path in paths:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            rel = os.path.relpath(path, ROOT)
            defs += [rel for _ in re.finditer(r"^def mask\(", text, re.M)]
            stars += [rel for _ in re.finditer(r"\*\*\*", text)]
    assert sorted(defs) == ["firmware/log.py", "tbsim/store.py"]
    assert stars == []
