# Meter firmware: host tooling. Every target installs what it needs into .venv/ and lib/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MPY    := $(VENV)/bin/micropython

.PHONY: all venv lib test sim bench clean

all: test

$(VENV)/.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Upstream paho-mqtt cannot share site-packages with tb-mqtt-client's paho fork (tools/tbsim tests).
PAHO_DIR := $(VENV)/paho-upstream
$(PAHO_DIR)/.stamp: requirements-paho.txt | $(VENV)/.stamp
	rm -rf $(PAHO_DIR)
	$(PY) -m pip install --quiet --no-deps --target $(PAHO_DIR) -r requirements-paho.txt
	touch $@

venv: $(VENV)/.stamp $(PAHO_DIR)/.stamp

lib/umqtt/simple.py: requirements-mpy.txt tools/fetch_mpy_lib.py | $(VENV)/.stamp
	$(PY) tools/fetch_mpy_lib.py requirements-mpy.txt lib

lib: lib/umqtt/simple.py

test: venv lib
	$(PY) -m pytest -q tests

# The firmware on the MicroPython Unix port against tools/tbsim, metering a simulated household.
# METERS=N  LOAD_W=W (constant load)  DURATION=S  REPORT=file.json  SPEEDUP=X (daily profile)
sim: venv lib
	$(PY) -m tools.sim

clean:
	rm -rf $(VENV) lib build run .pytest_cache
