# Two commands: `make run` starts the server, `make test` checks everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint types fmt system-deps clean cluster

$(STAMP): pyproject.toml proto/xmppd.proto
	$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,cluster,ops,fast]'
	$(BIN)/python -m services.cluster.protogen
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	@echo "xmppd: domain localhost, STARTTLS on 5222, direct TLS on 5223, data in ./data"
	@echo "  web clients: ws://localhost:5280/xmpp-websocket, BOSH http://localhost:5280/http-bind"
	@echo "  add a user:  $(BIN)/xmppctl adduser alice@localhost"
	@echo "  connect:     any XMPP client as alice@localhost to 127.0.0.1:5222 (self-signed certificate)"
	$(BIN)/xmppd

# External programs the tests drive (Debian packages named like their command):
# go-sendxmpp for the interop tests, prometheus (with promtool) for the monitoring tests.
system-deps:
	@missing=""; for p in go-sendxmpp prometheus; do \
	  command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null)); \
	  else echo "missing:$$missing (Debian: apt-get install$$missing)"; exit 1; fi; }

lint: install
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

types: install
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format services tests
	$(BIN)/ruff check --fix services tests

# Offline validation tools for tests/deploy (promtool, kustomize, kubernetes-validate,
# the Compose binary, schema packages): scripts/install-tools.sh, quick when installed.
tools: install
	bash scripts/install-tools.sh

test: install tools system-deps lint types
	XMPPD_REQUIRE_POSTGRES=1 $(BIN)/pytest -q $(PYTEST_ARGS)

# The quick loop: no slow tests, the server-core suite against the embedded default only.
test-fast: install
	XMPPD_TEST_MODES=embedded $(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

# A local cluster (2 edges on 5222/5223/5280 and 5232/5233/5290, 2 routers, presence,
# storage) as processes against the local PostgreSQL and Redis; Ctrl-C stops it.
cluster: install
	$(BIN)/python -m services.app.local $(CLUSTER_ARGS)

# The benchmark of issue #5 against Prosody and ejabberd (docs/benchmarks.md).
# Sizes and scenarios: make bench BENCH_ARGS="--quick" (see bench/run.py --help).
BENCH_ARGS ?=
.PHONY: bench
bench: install
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null && test -x $(BIN)/py-spy || \
	  $(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data data-cluster services/proto_gen .pytest_cache .mypy_cache .ruff_cache
