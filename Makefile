# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
WASM_TARGET := wasm32-unknown-unknown
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
SLUICE := target/debug/sluice

LANG_PLUGINS := target/lang-plugins
PY_SDK := $(wildcard guest-sdk/python/src/sluice_plugin/*.py)
JS_SDK := $(wildcard guest-sdk/js/src/*.js)

.PHONY: browser lang-plugins demo test cluster-test sdk-test registry-test chaos-small hostile hostile-wasi services services-down wasm-target plugins plugins-test build unit integration fmt-check

## demo: services up, plugins built; 500 numbers streamed into MongoDB while a new plugin version is shadowed, then promoted; counts printed.
demo: services plugins build
	scripts/demo

## test: everything the tests need, then all tests (unit, plugin, integration).
test: services plugins hostile build lang-plugins plugins-test sdk-test registry-test browser
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) cluster-test
	$(MAKE) chaos-small

# A three-broker cluster with its own FerretDB and registry, beside the default services.
CLUSTER_ENV := SERVICES_DIR=$(CURDIR)/.services/cluster KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 \
	MONGO_PORT=17017 FERRETDB_DEBUG_ADDR=- REGISTRY_PORT=18081

## cluster-test: the replicated-cluster fault tests (tests/tests/cluster.rs, ignored in a plain
## `cargo test`) on a three-broker KRaft cluster of their own (`scripts/services up --brokers 3`
## in .services/cluster: ports 19092-19097, FerretDB 17017, registry 18081), stopped afterwards.
cluster-test: plugins hostile build
	$(CLUSTER_ENV) scripts/services up --brokers 3
	status=0; $(CLUSTER_ENV) SLUICE_TEST_BROKERS=$$($(CLUSTER_ENV) scripts/services bootstrap) \
	  SLUICE_TEST_MONGO=mongodb://127.0.0.1:17017 SLUICE_TEST_REGISTRY=http://127.0.0.1:18081 \
	  $(CARGO) test -p sluice-tests --test cluster -- --ignored --test-threads=1 || status=$$?; \
	  $(CLUSTER_ENV) scripts/services down; exit $$status

## browser: what the status page's test drives: Debian's Chromium (apt-get, when missing) and the
## pinned puppeteer-core (npm, into ~/.cache/sluice on first use); quick when both are there.
browser:
	scripts/chromium >/dev/null
	scripts/puppeteer >/dev/null

## chaos-small: the chaos run with CI-sized defaults (the full run: scripts/chaos).
chaos-small: build
	scripts/chaos -m 20000 -k 4

services:
	scripts/services up

services-down:
	scripts/services down

wasm-target:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

plugins: wasm-target
	cd plugins && $(CARGO) build --release

## lang-plugins: the Python and JavaScript plugins the tests run (enrich, and the test-only
## hostile ones), built by `sluice plugin build` (which installs componentize-py and
## componentize-js into ~/.cache/sluice on first use) into target/lang-plugins/.
lang-plugins: $(LANG_PLUGINS)/enrich-py.wasm $(LANG_PLUGINS)/enrich-js.wasm $(LANG_PLUGINS)/hostile-py.wasm $(LANG_PLUGINS)/hostile-js.wasm

$(LANG_PLUGINS)/enrich-py.wasm: plugins/enrich-py/plugin.py $(PY_SDK) | build
	$(SLUICE) plugin build plugins/enrich-py -o $@
$(LANG_PLUGINS)/hostile-py.wasm: tests/hostile/hostile-py/plugin.py $(PY_SDK) | build
	$(SLUICE) plugin build tests/hostile/hostile-py -o $@
$(LANG_PLUGINS)/enrich-js.wasm: plugins/enrich-js/plugin.js $(JS_SDK) | build
	$(SLUICE) plugin build plugins/enrich-js -o $@
$(LANG_PLUGINS)/hostile-js.wasm: tests/hostile/hostile-js/plugin.js $(JS_SDK) | build
	$(SLUICE) plugin build tests/hostile/hostile-js -o $@

## hostile: the test-only misbehaving plugins (tests/hostile/).
hostile: wasm-target hostile-wasi
	cd tests/hostile && $(CARGO) build --release

# The hostile plugins that import WASI (tests/hostile/wasi-*): as components
# (wasm32-wasip2) they load and the host's WASI sandbox denies what they reach
# for; as core modules (wasm32-wasip1) the host refuses them at load.
hostile-wasi:
	@for t in wasm32-wasip1 wasm32-wasip2; do rustup target list --installed | grep -qx "$$t" || rustup target add "$$t"; done
	cd tests/hostile && $(CARGO) build --release --target wasm32-wasip2 --target wasm32-wasip1 \
		-p hostile-wasi-fs -p hostile-wasi-sockets -p hostile-wasi-clocks -p hostile-wasi-env

## sdk-test: the Python and JavaScript SDKs and their enrich examples, natively (no wasm)
## against the contract's test vectors (pytest in a venv under ~/.cache/sluice; node --test).
sdk-test:
	py=$$(scripts/pysdk); \
	  PYTHONPATH=guest-sdk/python/src "$$py" -m pytest -q -p no:cacheprovider guest-sdk/python/tests; \
	  PYTHONPATH=guest-sdk/python/src:plugins/enrich-py "$$py" -m pytest -q -p no:cacheprovider plugins/enrich-py
	cd guest-sdk/js && node --test
	mkdir -p plugins/enrich-js/node_modules && ln -sfn ../../../guest-sdk/js plugins/enrich-js/node_modules/sluice-plugin
	cd plugins/enrich-js && node --test

## registry-test: the test schema registry (scripts/registry) on its own, on a free port; and the
## pinned confluent-kafka tools (scripts/pytools) the format tests write their records with.
registry-test:
	python3 scripts/registry/test_registry.py
	scripts/pytools >/dev/null

plugins-test:
	cd plugins && $(CARGO) test --target $(HOST_TRIPLE)

build:
	$(CARGO) build --workspace --all-targets
