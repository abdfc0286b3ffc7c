# `make run`: install into .venv, then run the whole comparison on config.yaml.
# `make test`: install into .venv, then run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: install run test test-slow test-all bench clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,faiss]'
	# animal-mnist ships its images in the wheel; its declared dependencies are huge and unused.
	$(BIN)/pip install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile config.yaml --workflow-profile workflow/profiles/default

# The suite minus the long cases (kill -9 and resume, parallel DAGs, a tracking server, SLURM);
# CI runs `make test`, then `make test-slow`.
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# The performance benchmarks (quick grids; SDFM_BENCH_FULL=1 for the full ones) into reports/bench/.
# torchcfm is the peer of the pairing benchmark; its declared dependencies (Lightning, ...) are unused.
bench: $(STAMP)
	$(BIN)/pip install -q --no-deps torchcfm==1.0.7
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 1 bench

clean-results:
	rm -rf results reports/report.md reports/figures .snakemake
