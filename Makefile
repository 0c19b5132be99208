# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# Each bootstraps .venv from the pinned requirements.lock, then runs.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test run sandbox bench lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fallback-daemon demo

test: $(STAMP)
	# The operator page's browser test needs Debian's chromium (tests/integration/test_ui_browser.py).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python -m pytest

run: $(STAMP)
	$(BIN)/fallback-daemon run --sandbox

sandbox: $(STAMP)
	$(BIN)/fallback-daemon sandbox

bench: $(STAMP)
	$(BIN)/python -m bench

# Re-resolve the pinned set (needs network to PyPI).
lock:
	rm -rf /tmp/fd-lock && $(PY) -m venv /tmp/fd-lock
	/tmp/fd-lock/bin/pip install -q -e '.[test]'
	/tmp/fd-lock/bin/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) .data
