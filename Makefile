# The README's commands. Everything runs from a project-local virtualenv that `make` builds itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (on disk on our machines); GPU users: make test TORCH_SPEC='torch>=2.4'
TORCH_SPEC ?= torch==2.13.0
DEMO_FRAMES ?= 150
# gpu-check: torch from PyPI is a CUDA build (2.13.0: CUDA 13, as onnxruntime-gpu 1.31)
GPU_TORCH_SPEC ?= torch==2.13.0

.PHONY: test demo install bench-engines bench-latency bench-guard bench-learn bench-train-speed bench-quality \
	bench-viewer gpu-check gpu-check-plan model clean

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

bench-guard: $(BIN)/.installed
	$(BIN)/python -m bench.guard

bench-learn: $(BIN)/.installed
	$(BIN)/python -m bench.learn

bench-train-speed: $(BIN)/.installed
	$(BIN)/python -m bench.train_speed

# On n2a's simulator (bench.quality.simulated), then on material n2a did not make (bench.quality.external).
bench-quality: $(BIN)/.installed
	$(BIN)/python -m bench.quality

bench-viewer: $(BIN)/.installed
	$(BIN)/python -m bench.viewer

# On a GPU machine (PyPI only): its own venv with CUDA torch + onnxruntime-gpu, gpu tests, GPU
# benchmarks, 3 min of training per method; about 8 minutes. Writes bench/results/*-gpu.md.
gpu-check:
	TORCH_SPEC="$(GPU_TORCH_SPEC)" $(PYTHON) -m bench.gpu_check

gpu-check-plan:
	$(PYTHON) -m bench.gpu_check --dry-run

# The bundled model (models/README.md): supervised on the random-microscope mixture with a running
# weight average, 16,000 iterations at lr 1e-3 then 6,000 at 3e-4, and the average of the ten
# checkpoints 13,000-22,000 (~25 min on a quiet 2-core CPU). Iterations, not minutes, so a faster
# machine does the same training.
MODEL_RUN := build/model/run.safetensors
MODEL_TRAIN := nice -n 10 $(BIN)/n2a-train --mixture --sim-size 192 --mixture-series 160 --method supervised \
	--model lite-dilated --seed 0 --threads 2 --ema 0.999 --checkpoint-every 1000 --keep-checkpoints \
	--preview-every 1000 --quiet --out $(MODEL_RUN)
model: $(BIN)/.installed
	mkdir -p build/model
	$(MODEL_TRAIN) --iterations 16000 --overwrite
	$(MODEL_TRAIN) --iterations 22000 --lr 3e-4 --resume
	$(BIN)/python -m noise2atom.average --out models/default.safetensors \
	    $(foreach k,13 14 15 16 17 18 19 20 21 22,build/model/run.it$(k)000.safetensors)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
