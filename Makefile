# The two commands: `make run` and `make test`. Both set up a fresh Debian 12 machine first.
SHELL := /bin/bash
VENV := .venv
VF := $(VENV)/bin/virtfleet
DATA_DIR ?= $(or $(VIRTFLEET_DATA_DIR),/var/lib/virtfleet)

.PHONY: bootstrap run test lint bench stop flake-check install uninstall lab lab-down

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@bash scripts/run.sh "$(DATA_DIR)"

stop:
	@bash scripts/run.sh "$(DATA_DIR)" --stop

# virtfleet as a systemd service: its own venv under /opt/virtfleet (docs/host-service.md).
install: bootstrap
	$(VF) install --source "$(CURDIR)"

uninstall:
	$(VF) uninstall

test: bootstrap
	@bash scripts/test.sh

# Repeat the tests under P (a path, default the fast layers) N times; stops at the first failure.
P ?= tests/unit tests/protocol tests/functional
N ?= 20
flake-check: bootstrap
	@bash scripts/flake-check.sh -n $(N) $(P)

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: bootstrap
	$(VENV)/bin/python bench/vm_start.py

# A three-host cluster on this machine (namespaces vf-lab1..3, data in $(LAB_DIR)); lab-down removes it.
LAB_DIR ?= /var/lib/virtfleet-lab
lab: bootstrap
	@VIRTFLEET_LAB_DIR="$(LAB_DIR)" bash scripts/lab.sh up

lab-down:
	@VIRTFLEET_LAB_DIR="$(LAB_DIR)" bash scripts/lab.sh down
