# apoe-assets: `make demo` and `make test` are all a fresh machine needs (Python 3.11 + make).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.apoe
export DAGSTER_HOME := $(STATE)/dagster_home
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: demo test ui lint data validate clean peers
PEERS := bcftools samtools tabix plink1.9 plink2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

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

## Run the whole test suite.
test: $(VENV)/.dev
	$(BIN)/python -m pytest

## Debian's validation peers that the tests compare against (bcftools, samtools, tabix, PLINK).
peers:
	@missing=$$(for t in $(PEERS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(PEERS); \
	fi

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
