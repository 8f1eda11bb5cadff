# apoe-assets: `make demo` and `make test` are all a fresh machine needs (Python 3.11 + make).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.apoe
export DAGSTER_HOME := $(STATE)/dagster_home
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
TEST_WORKERS ?= 2

.PHONY: demo test ui lint data validate clean peers
DEBIAN_PEERS := bcftools samtools tabix plink1.9 plink2 chromium redis-server postgresql
# `make test PEERS=optional` runs without installing them; the run then ends by listing every
# comparison it skipped.
PEERS ?= required
INSTALL_PEERS := apt-get update -qq && apt-get install -y -qq $(DEBIAN_PEERS)

$(VENV)/.runtime: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

## Materialise every asset of the bundled demo study into the local Dagster instance.
demo: $(VENV)/.runtime $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m apoe_assets.materialize

## Run the whole test suite, peers included (installed first when missing).
# One BLAS/OpenMP thread per worker: the workers already fill the cores, and a worker's
# idle-spinning BLAS threads would take the other's core.
test: $(if $(filter optional,$(PEERS)),,peers) $(VENV)/.dev
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

## Debian's validation peers that the tests compare against (bcftools, samtools, tabix, PLINK),
## the headless Chromium that takes the UI tests' screenshots, and the PostgreSQL and Redis
## servers of the scale-out tests (started by the tests on 127.0.0.1, never as services).
peers:
	@missing=$$(for t in $(DEBIAN_PEERS); do case $$t in \
		postgresql) command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo $$t;; \
		*) command -v $$t >/dev/null || echo $$t;; esac; done); \
	[ -z "$$missing" ] && exit 0; \
	echo "installing Debian's" $$missing "(the tests compare the project with them)"; \
	if [ "$$(id -u)" = 0 ]; then sh -c '$(INSTALL_PEERS)' && exit 0; \
	elif command -v sudo >/dev/null; then sudo sh -c '$(INSTALL_PEERS)' && exit 0; fi; \
	echo "could not install" $$missing". As root, run:  $(INSTALL_PEERS)"; \
	echo "or run the tests without them:  make test PEERS=optional"; exit 1

## Dagster UI (webserver + daemon) and MLflow UI, both on 127.0.0.1.
ui: $(VENV)/.runtime $(DAGSTER_HOME)/dagster.yaml
	@echo "Dagster: http://127.0.0.1:$(DAGSTER_PORT)   MLflow: http://127.0.0.1:$(MLFLOW_PORT)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(STATE)/mlflow.db \
		--default-artifact-root $(STATE)/mlflow-artifacts --host 127.0.0.1 --port $(MLFLOW_PORT) & \
	$(BIN)/dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT) -w workspace.yaml; kill %1

## Check that the code location loads.
validate: $(VENV)/.runtime
	$(BIN)/dagster definitions validate -w workspace.yaml

lint: $(VENV)/.dev
	$(BIN)/ruff check apoe_assets apoe_assets_tests benchmarks

## Regenerate the bundled demo study (byte-identical for the same seed).
data: $(VENV)/.runtime
	$(BIN)/python -m apoe_assets.demo --out data/demo

clean:
	rm -rf $(STATE)
