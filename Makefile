# The README's commands. Each target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unleash clean

demo: $(STAMP)
	$(BIN)/rollout demo

test: $(STAMP) unleash
	scripts/install-browser
	scripts/install-nginx
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy service

# Node 22 + unleash-server 8.2.0 for the integration tests, cached outside the repo.
unleash:
	scripts/install-unleash

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name model-rollout --display-name "model-rollout (Python 3)" >/dev/null
	touch $(STAMP)

clean:
	rm -rf $(VENV) .data
