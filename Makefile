# Two commands do everything (see README.md):
#   make serve   create the environment if needed, serve the site at http://127.0.0.1:8000 with live reload
#   make test    create the environment if needed, run every test (units, doctests, strict site build)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Material for MkDocs prints an end-of-life banner on every build; the project knows (see CONTRIBUTING.md).
export NO_MKDOCS_2_WARNING := 1

.PHONY: serve test env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
