# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ML_PLATFORM_HOME ?= $(CURDIR)/.ml_platform
export DAGSTER_HOME ?= $(ML_PLATFORM_HOME)/dagster

.PHONY: install instance demo demo-1m demo-drift dev mlflow test lint typecheck clean

$(BIN)/ml-platform: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# requirements.lock pins every transitive dependency (pip freeze of a working install);
	# torch==2.13.0 is the CPU wheel on this machine's disk.
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

install: $(BIN)/ml-platform

# The local instance's settings (pools limited to one step, one training run per model),
# unless DAGSTER_HOME already has a dagster.yaml with content.
instance:
	mkdir -p $(DAGSTER_HOME)
	test -s $(DAGSTER_HOME)/dagster.yaml || cp deploy/local/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install instance  ## run the example end to end (100k payments) and print the champion
	$(BIN)/ml-platform demo

demo-1m: install instance  ## the same with 1,000,000 payments
	$(BIN)/ml-platform demo --rows 1000000

demo-drift: install instance  ## train, score drifted data, report drift, let the sensor retrain
	$(BIN)/ml-platform demo --drift

dev: install instance  ## Dagster UI + daemon on the same instance as the demo (http://127.0.0.1:3000)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow: install  ## MLflow UI on the same backend (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(ML_PLATFORM_HOME)/mlflow.db \
		--default-artifact-root $(ML_PLATFORM_HOME)/mlartifacts --host 127.0.0.1 --port 5000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/pyright

test: install lint typecheck  ## lint, type-check and the full test suite
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .ml_platform
