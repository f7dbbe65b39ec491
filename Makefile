# voicecall — `make run` starts a node on embedded defaults, `make test` runs the whole suite.
# Both bootstrap .venv and install missing Debian packages (when run as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Programs the product uses at run time (TTS, audio conversion, WAV I/O).
DEB_RUN := espeak-ng sox libsndfile1
# Real peers the tests drive: SIPp, baresip, Prometheus (promtool), Kamailio; systemd for
# systemd-analyze (deploy/systemd unit checks).
DEB_TEST := $(DEB_RUN) sip-tester baresip prometheus kamailio systemd
# What `make bench` needs: SIPp, rtpengine (the anchor), gcc (bench/media.py's RTP generator).
DEB_BENCH := $(DEB_RUN) sip-tester rtpengine-daemon gcc

.PHONY: run test lint typecheck unit integration bench deps-run deps-test deps-bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps-run:
	@./.ci/apt-install $(DEB_RUN)

deps-test:
	@./.ci/apt-install $(DEB_TEST)

deps-bench:
	@./.ci/apt-install $(DEB_BENCH)

run: deps-run $(VENV)/.installed
	$(BIN)/voicecall serve $(if $(CONFIG),--config $(CONFIG),)

lint: $(VENV)/.installed
	$(BIN)/ruff check switch media control_api tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: deps-test $(VENV)/.installed lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# BENCH_ARGS=--quick for the short run; --json FILE to keep the results.
bench: deps-bench $(VENV)/.installed
	bench/run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
