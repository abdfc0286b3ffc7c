# `make run`: install into .venv, validate config.yaml, then run the whole comparison on it (outputs under
# results/ and reports/, both ignored by git); `make readme-figures` then copies the README's figures to docs/figures/.
# `make test`: install into .venv, then run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
CONFIG ?= config.yaml

.PHONY: install run readme-figures test test-slow test-all bench clean-results browser mlflow-screenshot

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,faiss]'
	# animal-mnist ships its images in the wheel; its declared dependencies are huge and unused.
	$(BIN)/pip install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

# `make run CONFIG=workflow/configs/animals.yaml` runs another (complete) config; it is validated first, so a
# YAML mistake is reported with its line and column instead of Snakemake's "not valid JSON or YAML". The
# default profile (profiles/default) is found by Snakemake itself; SNAKEMAKE_ARGS adds options, e.g.
# make run SNAKEMAKE_ARGS="--config 'seeds=[0]'".
run: $(STAMP)
	$(BIN)/sdfm validate-config $(CONFIG)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

# The README shows figures of the default run from docs/figures/ (tracked); a run never writes there.
readme-figures:
	@for figure in docs/figures/*.png; do test -f reports/figures/$${figure##*/} || \
	  { echo "reports/figures/$${figure##*/} is missing: run the default config first (make run)"; exit 1; }; done
	@for figure in docs/figures/*.png; do cp reports/figures/$${figure##*/} $$figure; done
	@echo "docs/figures/ refreshed from reports/figures/: review the figures, then commit them"

# The suite minus the long cases (kill -9 and resume, parallel DAGs, a tracking server, SLURM);
# CI runs `make test`, then `make test-slow`.
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow" --durations=15

test-slow: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow --durations=60

test-all: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# The performance benchmarks (quick grids; SDFM_BENCH_FULL=1 for the full ones) into reports/bench/.
# torchcfm is the peer of the pairing benchmark; its declared dependencies (Lightning, ...) are unused.
bench: $(STAMP)
	$(BIN)/pip install -q --no-deps torchcfm==1.0.7
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 1 bench

# Debian's headless Chromium for scripts/mlflow_screenshot.py (apt, as root; about 300 MB).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core)

# A PNG of the MLflow runs table of results/mlflow.db (EXPERIMENT=<experiment_name>, default sdfm).
mlflow-screenshot: $(STAMP) browser
	$(BIN)/python scripts/mlflow_screenshot.py --store results/mlflow.db --experiment $(or $(EXPERIMENT),sdfm) --out docs/figures/mlflow_runs_table.png

clean-results:
	rm -rf results reports/report.md reports/figures .snakemake
