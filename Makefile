# One command serves on the embedded default; one command passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test lint format bench clean install chromium go

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The bench's own extra (gunicorn, a second server for the anchor): tests never need it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.bench-* && touch $(BENCH_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pm-ops demo
	$(BIN)/pm-ops serve

# The console's browser tests drive Debian's Chromium (Playwright cannot download its own here).
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# Go's own note and tlog packages check our checkpoints and proofs (tests/test_go_reader.py).
go:
	command -v go >/dev/null && test -d /usr/share/gocode/src/golang.org/x/mod || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-golang-x-mod-dev)

test: $(STAMP) chromium go
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# wrk (a C load generator) drives the servers: installed from the distribution when we can.
bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; }; } || \
		{ echo "make bench needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk"; exit 1; }
	$(BIN)/python bench/run.py
	$(BIN)/python bench/checkpoints.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis test-artifacts
