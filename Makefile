# Appa Studio: the two commands of the README, and the set-up they share.
#
#   make demo   set up .venv and serve the app on the embedded default model
#   make test   set up .venv (with test extras and Debian's Chromium) and run the tests
#   make lint   check the code with ruff (pyproject.toml's rules; CI runs it after the tests)
#
# On a CPU machine torch is pinned to the CPU build (constraints-cpu.txt) so that no CUDA wheels
# are pulled; where `nvidia-smi` works, the CUDA torch already installed (or pip's default) is kept.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONSTRAINTS := $(shell nvidia-smi >/dev/null 2>&1 || echo "-c constraints-cpu.txt")
PYTEST_ARGS ?=

.PHONY: demo test lint setup setup-test browser bench default-model clean help

help:
	@sed -n '3,5p' Makefile

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependencies change.
$(VENV)/.installed: pyproject.toml constraints-cpu.txt | $(VENV)/bin/python
	$(PIP) install -q $(CONSTRAINTS) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml constraints-cpu.txt | $(VENV)/bin/python
	$(PIP) install -q $(CONSTRAINTS) -e ".[test,synth,grib]"
	@touch $(VENV)/.installed $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test browser

# Browser tests drive Debian's Chromium (never `playwright install`, which downloads a browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "installing Debian's chromium for the browser tests"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

demo: setup
	$(VENV)/bin/appa serve --model default

# Retrain the shipped default model from scratch (synthetic planet → autoencoder → prior → card).
default-model: setup
	$(PIP) install -q $(CONSTRAINTS) -e ".[synth]"
	$(PY) scripts/make_default_model.py $(ARGS)

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
