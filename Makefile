# One command runs the demo (`make run`), one passes the tests (`make test`); both set up
# everything first, idempotently: Debian packages (as root), kernel headers, the venv.

# Debian's interpreter: bcc is built for it, and its PGO+LTO build runs spright's hot paths
# faster than a pyenv-style --enable-shared build (see docs/performance.md).
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-venv python3-bpfcc libbpfcc bpftool linux-headers-amd64 wrk chromium tesseract-ocr fonts-dejavu-core redis-server iproute2 util-linux nginx-light gcc python3-dev
APP ?= apps.online_boutique:app
PORT ?= 8080
TRANSPORT ?= auto

# Test processes (pytest-xdist): most node tests wait on sockets and timers, so three share two
# cores well; a module's tests stay in one process (its nodes are module fixtures).
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

.PHONY: setup system native run test test-all test-pure fuzz soak bench bench-quick lint clean

setup: system $(VENV)/.installed native

# Debian packages for the eBPF data plane and the benchmarks. Without root the node still
# runs on the AF_UNIX transport; `spright doctor` explains what is missing.
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
		else \
			echo "not root: skipping Debian packages ($$missing); the unix transport will be used"; \
		fi; \
	fi
	@if [ "$$(id -u)" = 0 ]; then bash ebpf/setup-headers.sh >/dev/null; fi
	@# the unprivileged user every worker drops to (spright run --user; else nobody)
	@if [ "$$(id -u)" = 0 ]; then id -u spright >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin spright; fi

# The venv sees Debian's bcc (never PyPI's unrelated `bcc`) through a one-package shim.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@if [ -d /usr/lib/python3/dist-packages/bcc ]; then \
		mkdir -p $(VENV)/debian-bcc && ln -sfn /usr/lib/python3/dist-packages/bcc $(VENV)/debian-bcc/bcc && \
		echo "$(abspath $(VENV))/debian-bcc" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/debian-bcc.pth"; \
	fi
	touch $@

# The hot path compiled with mypyc (spright/native.py says which modules, and runs them as Python
# where this cannot build them or SPRIGHT_PURE=1 is set); a no-op while the build is current.
native: $(VENV)/.installed
	$(PY) -c 'import sys, spright.native; sys.exit(spright.native.build())'

run: setup
	$(VENV)/bin/spright run $(APP) --port $(PORT) --transport $(TRANSPORT)

# everything but the tests marked slow (long loads, the benchmarks' own runs, OCR); CI runs test-all
test: setup
	$(PYTEST) -m "not slow"

test-all: setup
	$(PYTEST)

# the contract suite and the request path's tests on the Python sources of the compiled modules
test-pure: setup
	SPRIGHT_PURE=1 $(PYTEST) -m "not slow" tests/test_native.py tests/test_contract.py tests/test_contract_domains.py \
		tests/test_runtime.py tests/test_calls.py tests/test_ctx.py tests/test_http_rules.py tests/test_testclient.py tests/test_http.py

# the HTTP front and the data plane's receive side under many more hypothesis examples than `make test` runs
fuzz: setup
	SPRIGHT_FUZZ_EXAMPLES=20000 $(PY) -m pytest tests/test_fuzz_http.py
	SPRIGHT_FUZZ_EXAMPLES=3000 $(PY) -m pytest tests/test_fuzz_dataplane.py

# ten minutes of the boutique mix near 80% of saturation, then checks for leaks (bench/soak.py)
soak: setup
	$(PY) -m bench.soak

bench: setup
	$(PY) -m bench.paper
	$(PY) -m bench.instances
	$(PY) -m bench.overload
	$(PY) -m bench.streaming

bench-quick: setup
	$(PY) -m bench.paper --quick
	$(PY) -m bench.instances --quick
	$(PY) -m bench.overload --seconds 4
	$(PY) -m bench.streaming --samples 500 --sizes 64,256 --seconds 5

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layers contract in pyproject.toml

clean:
	if [ -x $(PY) ]; then $(PY) -c 'import spright.native; spright.native.clean()'; fi
	rm -rf $(VENV) .pytest_cache .ruff_cache build
