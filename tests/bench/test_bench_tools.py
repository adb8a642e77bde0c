"""The heap-breakdown tools read what they claim to: every .mpy of the device tree parses to
its last byte (bench/mpyinfo.py), and the allocation tracer's instrumented sources are valid
Python with a probe before every statement it can reach (bench/alloctrace.py)."""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import alloctrace, mpyinfo  # noqa: E402
from tools.build_device import build, sources  # noqa: E402


def test_every_module_of_the_device_tree_parses_and_has_code(tmp_path):
    build(str(tmp_path))
    for _src, rel in sources():
        with open(os.path.join(str(tmp_path), rel + ".mpy"), "rb") as f:
            info = mpyinfo.parse(f.read())  # raises unless every byte is accounted for
        assert info["code"], rel
        assert mpyinfo.code_bytes(info) >= sum(n for n, _c in info["code"])
        # 64-bit blocks are twice the 32-bit ones: the same code takes more room there.
        assert mpyinfo.code_bytes(info, 8) > mpyinfo.code_bytes(info, 4)


def test_instrumented_sources_compile_with_a_probe_in_every_function():
    for src, _rel in sources():
        with open(src) as f:
            text = f.read()
        traced, sites = alloctrace.instrument(text, 1, src)
        ast.parse(traced)  # elif, one-line bodies, decorators, continuation lines
        funcs = [n for n in ast.walk(ast.parse(text))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        if funcs:
            assert sites, src
        lines = text.splitlines()
        for _site, _label, line, code in sites:
            assert lines[line - 1].strip() == code


def test_a_probe_goes_before_each_statement_of_a_block_but_never_before_an_elif():
    text = ("def f(x):\n"
            "    if x:\n"
            "        a = [x]\n"
            "    elif x is None: return 1\n"
            "    else:\n"
            "        a = 2\n"
            "    return a\n")
    traced, sites = alloctrace.instrument(text, 7, "t")
    assert [s[2] for s in sites] == [2, 3, 6, 7]
    assert "    _mt(7)\n    if x:" in traced and "_mt(8)\n        a = [x]" in traced
    ns = {}
    exec(compile(traced.replace("from alloctrace import _mt", "_mt = lambda s: None"), "t",
                 "exec"), ns)
    assert ns["f"](0) == 2 and ns["f"](None) == 1 and ns["f"](3) == [3]


def test_a_traced_cycle_counts_the_sleeps_between_steps_and_a_publishing_step_does_not():
    # What bench/probe/alloctrace.py prints: a step, then the gap after it (the main loop's
    # sleep in the HAL), each with the lines that allocated.
    sites = [(0, "(outside)", 0, ""), (1, "a.py", 10, "x = []"), (2, "hal.py", 20, "open(f)")]
    lines = ["ALLOC gap 5 96 96", "ALLOC site 2 96 96",  # before the first publishing step
             "ALLOC step 6 64 64", "ALLOC site 1 64 64",  # publishes
             "ALLOC gap 6 32 32", "ALLOC site 2 32 32",
             "ALLOC step 6 0 0",
             "ALLOC gap 6 32 32", "ALLOC site 2 32 32",
             "ALLOC step 7 64 64", "ALLOC site 1 64 64",  # publishes: a cycle ends
             "ALLOC gap 7 0 0"]
    a = alloctrace.parse(lines, sites)
    assert a["publish"]["net"] == 64 and a["publish"]["steps"] == 2
    assert a["publish"]["lines"] == [[1, 64, 64]]  # the sleeps are not the step's
    assert a["cycle"]["net"] == 128 and a["cycle"]["steps"] == 1
    assert sorted(a["cycle"]["lines"]) == [[1, 64, 64], [2, 64, 64]]
