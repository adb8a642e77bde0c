"""Every example in README.md and docs/ works as written (issue 15): JSON configs validate as
the meter validates them, CSV rows make configs, meterconfig commands run (in order, one
session per document, with the example files the document names in
<!-- example: NAME --> markers), other tools accept the flags shown, make targets and their
variables exist, and every other command names a program on a known list. A new kind of
example fails here until it is checked or listed."""

import glob
import json
import os
import re
import shlex
import subprocess

import pytest

from deploy_support import PY, ROOT
from firmware import config

DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# Programs the examples run that are not this repository's: shown for the technician, not run.
EXTERNAL = {"esptool", "openssl", "mpremote", "sha256sum", "cat", "ls", "apt-get", "git",
            "sudo", "cd", "tee", "grep", "less"}
# Values for the shell variables the examples use in place of secrets.
ENV = {"SUPPLIER_KEY": "SUPPLIER-7f3a-secret", "WIFI_PASSWORD": "correct horse battery",
       "PROFILE_KEY": "xk2d9y6mztr1kz0hq4vv", "PROFILE_SECRET": "8fq2ar9v7u1c3n0b5m6l",
       "DEVICE_TOKEN": "token-from-the-platform-0004"}
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
MARKER = re.compile(r"<!-- example: ([\w.-]+) -->\s*$")


def blocks(doc):
    """(language, text, example file name or None, line) of each fenced block."""
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in FENCE.finditer(text):
        indent, lang, body = m.group(1), m.group(2), m.group(3)
        body = "".join(l[len(indent):] if l.startswith(indent) else l
                       for l in body.splitlines(True))
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        out.append((lang, body, marker.group(1) if marker else None,
                    text.count("\n", 0, m.start()) + 1))
    return out


def commands(lang, body):
    """Shell command lines of a block: every line of a sh block; in an untagged block only
    the lines that start with a program (the rest is output, tables and diagrams)."""
    if lang not in ("sh", "bash", "console", ""):
        return []
    lines = body.replace("\\\n", " ").splitlines()
    out = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        words = [w.strip("[]") for w in shlex.split(line, comments=True) if w.strip("[]")]
        if not words:
            continue
        if raw[:1] == " " and out and lang:  # a usage synopsis going on over an indented line
            out[-1] += words
            continue
        if lang == "" and words[0] not in EXTERNAL | {"make", "python", "python3"}:
            continue
        # A pipeline or a list is several commands, each checked on its own.
        part = []
        for w in words + ["|"]:
            if w in ("|", "||", "&&", ";"):
                if part:
                    out.append(part)
                part = []
            else:
                part.append(w)
    return out


def makefile():
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*(?: [A-Za-z][\w.-]*)*)\s*:(?!=)", text, re.M))
    targets = {t for group in targets for t in group.split()}
    return text, targets


def sources_mention(name):
    for top in ("lab", "bench", "tools"):
        for path in glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                if '"%s"' % name in f.read():
                    return True
    return False


def tool_argv(words):
    """(argv of the tool, its arguments) for `python tools/x.py ...` or `python -m pkg ...`."""
    if words[1] == "-m":
        return [PY, "-m", words[2]], words[3:]
    return [PY, os.path.join(ROOT, words[1])], words[2:]


def run(argv, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, **ENV)  # python -m <this repository's package>
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def expand(args, cwd):
    # What the shell would do with $VARIABLES and globs.
    out = []
    for w in args:
        w = os.path.expandvars(w) if "$" in w else w
        matches = sorted(glob.glob(os.path.join(cwd, w))) if "*" in w else []
        out += [os.path.relpath(m, cwd) for m in matches] if matches else [w]
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_example_in_the_document_works(doc, tmp_path):
    found = blocks(doc)
    make_text, targets = makefile()
    work = tmp_path / "session"
    work.mkdir()
    for lang, body, name, line in found:
        where = "%s:%d" % (doc, line)
        if name:
            (work / name).write_text(body)
        if lang == "json":
            data = json.loads(body)  # strict JSON, as the meter reads it
            assert isinstance(data, dict), where
            if name == "config.json" or {"wifi_ssid", "cups"} <= set(data):
                warnings = []
                cfg, errors = config.parse(body.encode(), warnings)
                assert errors == [] and warnings == [], (where, errors, warnings)
            else:  # shared fields (site.json): valid fields with valid values
                base = {"wifi_ssid": "w", "supplier_key": "s" * 8, "pulse_pin": 4,
                        "cups": "ES0021000000012345DZ", "access_token": "t" * 20}
                if "provision_key" in data:
                    del base["access_token"]
                cfg, errors = config.validate(dict(base, **data))
                assert errors == [], (where, errors)
        elif lang == "python":
            compile(body, where, "exec")
        elif body.startswith("device_name,"):
            assert name and name.endswith(".csv"), \
                "%s: a CSV example needs an <!-- example: NAME.csv --> marker" % where
        for words in commands(lang, body):
            program = words[0]
            if program in ("python", "python3", ".venv/bin/python"):
                assert words[1] == "-m" or os.path.exists(os.path.join(ROOT, words[1])), where
                argv, args = tool_argv(words)
                if words[1] == "tools/meterconfig.py" and "..." not in args:
                    r = run(argv + expand(args, str(work)), str(work))
                    assert r.returncode == 0, (where, " ".join(words), r.stderr)
                    continue
                # A placeholder (...) or another tool: the subcommand and flags shown exist.
                r = None
                if args and not args[0].startswith("-") and args[0] != "...":
                    r = run(argv + [args[0], "--help"], str(work))
                if r is None or r.returncode:
                    r = run(argv + ["--help"], str(work))
                assert r.returncode == 0, (where, words, r.stderr)
                for w in args:
                    if w.startswith("--"):
                        assert w.split("=")[0] in r.stdout, (where, w)
            elif program == "make":
                if "-C" in words:
                    continue  # MicroPython's own make, in its checkout (docs/deploy.md)
                goals = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
                for goal in goals:
                    assert goal in targets, "%s: make %s: no such target" % (where, goal)
                for w in words[1:]:
                    if "=" in w:
                        var = w.split("=")[0]
                        assert re.search(r"\b%s\b" % var, make_text) or sources_mention(var), \
                            "%s: make variable %s is used nowhere" % (where, var)
            else:
                assert program in EXTERNAL, "%s: an example runs %r: check it here or list it " \
                                            "in EXTERNAL" % (where, program)


def test_the_examples_cover_what_the_issue_names():
    kinds = set()
    for doc in DOCS:
        for lang, body, name, _line in blocks(doc):
            if lang == "json":
                kinds.add("json")
            if body.startswith("device_name,"):
                kinds.add("csv")
            for words in commands(lang, body):
                kinds.add(words[0] if words[0] != "python" else words[1])
    assert {"json", "csv", "make", "tools/meterconfig.py"} <= kinds, kinds
