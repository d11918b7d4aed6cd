# The README's commands. Everything runs from a project-local virtualenv that `make` builds itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (on disk on our machines); GPU users: make test TORCH_SPEC='torch>=2.4'
TORCH_SPEC ?= torch==2.13.0
DEMO_FRAMES ?= 150

.PHONY: test demo install bench-engines bench-latency bench-quality bench-viewer model clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/pytest -q tests

demo: $(BIN)/.installed
	$(BIN)/python -m streamer.demo --frames $(DEMO_FRAMES)

bench-engines: $(BIN)/.installed
	$(BIN)/python -m bench.engines

bench-latency: $(BIN)/.installed
	$(BIN)/python -m bench.latency

bench-quality: $(BIN)/.installed
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.quality_external

bench-viewer: $(BIN)/.installed
	$(BIN)/python -m bench.viewer

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
