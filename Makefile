# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# Each bootstraps .venv from the pinned requirements.lock, then runs.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint run sandbox bench lock clean

# requirements.lock pins setuptools too, so the editable install builds offline with it (no build isolation).
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fallback-daemon demo

# The gates: lint and format over the whole repository (package, tests, bench), strict typing of the package
# (configuration in pyproject.toml). All three always run, so one pass reports every failing gate; the target
# fails if any of them does.
lint: $(STAMP)
	@status=0; \
	echo '+ ruff check .'; $(BIN)/ruff check . || status=1; \
	echo '+ ruff format --check .'; $(BIN)/ruff format --check . || status=1; \
	echo '+ mypy --strict fallback_daemon'; $(BIN)/mypy --strict fallback_daemon || status=1; \
	if [ $$status -ne 0 ]; then echo 'make lint: a gate failed (see above)' >&2; fi; \
	exit $$status

test: lint
	# The operator page's browser test needs Debian's chromium (tests/integration/test_ui_browser.py).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python -m pytest

run: $(STAMP)
	$(BIN)/fallback-daemon run --sandbox

sandbox: $(STAMP)
	$(BIN)/fallback-daemon sandbox

bench: $(STAMP)
	$(BIN)/python -m bench

.PHONY: chaos
chaos: $(STAMP)  # the fault campaign (~13 min): table printed and written to chaos/results/ (docs/reliability.md)
	$(BIN)/python -m chaos --label campaign

# Re-resolve the pinned set (needs network to PyPI). --all keeps setuptools (the build backend the editable
# install and the wheel test use without build isolation); pip itself is upgraded by the bootstrap instead.
lock:
	rm -rf /tmp/fd-lock && $(PY) -m venv /tmp/fd-lock
	/tmp/fd-lock/bin/pip install -q --upgrade pip
	/tmp/fd-lock/bin/pip install -q -e '.[test]'
	/tmp/fd-lock/bin/pip freeze --all --exclude-editable --exclude pip > requirements.lock

clean:
	rm -rf $(VENV) .data
