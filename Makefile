# softswitch: the two commands a fresh Debian machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Debian packages the interop tests and the demo drive for real.
PEERS := sipp:sip-tester baresip:baresip kamailio:kamailio espeak-ng:espeak-ng sox:sox tshark:tshark pg_ctlcluster:postgresql \
         chromium:chromium fail2ban-regex:fail2ban iptables:iptables

.PHONY: all setup peers demo serve test check bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) peers

# Install the missing peers only (root on Debian; apt-get update first).
peers:
	@missing=""; for pair in $(PEERS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian peers:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# `make demo` runs the whole callback call; `make demo SCENARIO=location` the location change
# by phone (# in the trigger's early media, the menu, the callback at the new number).
SCENARIO ?= call
demo: setup
	$(VENV)/bin/softswitch demo --scenario $(SCENARIO)

serve: setup
	$(VENV)/bin/softswitch serve

# scripts/check is the one definition of both: ruff check, ruff format --check and mypy --strict
# (package, tests, interop, scripts); then, for test, pytest with branch coverage.
test: setup
	VENV=$(VENV) scripts/check --tests

check: $(STAMP)
	VENV=$(VENV) scripts/check

# Each prints its figure beside a baseline measured in the same run (see README).
bench: setup
	$(PY) scripts/bench_parser.py
	$(PY) scripts/bench_node.py
	$(PY) scripts/bench_triggers.py --quick
	$(PY) scripts/bench_callback.py --quick
	$(PY) scripts/bench_dtmf.py --quick
	$(PY) scripts/bench_media.py --seconds 4

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
