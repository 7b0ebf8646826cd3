# Two commands do everything (see README.md):
#   make serve   create the environment if needed, serve the site at http://127.0.0.1:8000/llm-glossary/ with live reload
#   make test    create the environment if needed, run every test (units, doctests, strict site build,
#                the site in a browser)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Material for MkDocs prints an end-of-life banner on every build; the project knows (see CONTRIBUTING.md).
export NO_MKDOCS_2_WARNING := 1

.PHONY: serve test env browser clean

env: $(STAMP) browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

# A Chromium for the browser tests (tests/test_browser.py). Playwright cannot download its own
# browser on every machine, so a system one comes first: $CHROMIUM, Debian's chromium or Google
# Chrome; as root on Debian/Ubuntu, apt installs chromium (and Korean fonts); else Playwright
# downloads its build.
browser: $(STAMP)
	@if [ -n "$$CHROMIUM" ] || [ -x /usr/bin/chromium ] || [ -x /usr/bin/google-chrome ]; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-noto-cjk; \
	else \
	  $(BIN)/python -m playwright install chromium; \
	fi

serve: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

test: $(STAMP) browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
