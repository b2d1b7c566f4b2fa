# attrex: the two commands of the README, and a few more.
#   make app   set up .venv if needed, then start the app on the default scenario
#   make test  set up (with the test extras), then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: app test setup setup-test browser lint clean-cache help

help:
	@echo "make app    - start the app (http://localhost:$(PORT))"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# re-install only when the project's metadata changes: a second `make app` starts in seconds
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(TSTAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

setup: $(STAMP)
setup-test: $(TSTAMP)

app: $(STAMP)
	$(VENV)/bin/streamlit run explorer/app.py --server.port $(PORT)

# Chromium for the browser tests: Debian's package where we may install it; the tests
# skip with the reason where the machine cannot have it.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install Chromium: browser tests will be skipped"; \
	else echo "no Chromium and no root to install it: browser tests will be skipped"; fi

test: $(TSTAMP) browser
	$(PY) -m pytest

lint: $(TSTAMP)
	$(VENV)/bin/ruff check core explorer tests benchmarks tools

clean-cache:
	rm -rf "$${ATTREX_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/attrex}"
