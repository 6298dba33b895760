# cargo: `docker migrate` CLI plugin and the `cargo` managed volume plugin.
# `make help` lists the targets.

PLUGIN_NAME ?= cargo
PLUGIN_TAG  ?= latest
REGISTRY    ?=
BUILD       ?= build
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
REVISION    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Test packages that need real engines run as root and start their own.
TEST_TIMEOUT ?= 40m
# Release builds leave failpoints out; the tests build their own binaries
# with them, under $(BUILD)/test, so an installed build never has them.
TAGS        ?= nosystemd
TEST_TAGS   := nosystemd failpoints
TEST_BUILD  := $(abspath $(BUILD))/test
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(abspath $(BUILD))/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)

PKG      := github.com/cargo-migrate/cargo
LDFLAGS  := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Revision=$(REVISION)
GOFLAGS_BUILD = -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)"
PLUGIN_REF := $(if $(REGISTRY),$(REGISTRY)/)$(PLUGIN_NAME):$(PLUGIN_TAG)
GO_SOURCES := $(shell find . -name '*.go' -not -path './build/*') go.mod go.sum

export CGO_ENABLED := 0

.PHONY: bench-scale all help cli plugin-binary plugin plugin-create install push test test-unit test-e2e test-engine26 test-engine28 test-engine28-classic test-engine28-c8d test-fuzz test-build bench bench-live bench-downtime demo demo-down vet lint clean

all: cli plugin ## Build the CLI plugin and the managed plugin's rootfs

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

cli: $(BUILD)/docker-migrate ## Build the static CLI plugin build/docker-migrate

$(BUILD)/docker-migrate: $(GO_SOURCES)
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cli-plugin

plugin-binary: $(BUILD)/cargo-volume-plugin ## Build the static plugin binary build/cargo-volume-plugin

$(BUILD)/cargo-volume-plugin: $(GO_SOURCES)
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./volume-plugin

plugin: $(BUILD)/cargo-volume-plugin config.json ## Build build/plugin (config.json + FROM-scratch rootfs); needs no engine
	rm -rf $(BUILD)/plugin
	mkdir -p $(BUILD)/plugin/rootfs/mnt/volumes $(BUILD)/plugin/rootfs/mnt/state \
		$(BUILD)/plugin/rootfs/run/docker/plugins $(BUILD)/plugin/rootfs/tmp \
		$(BUILD)/plugin/rootfs/dev $(BUILD)/plugin/rootfs/proc $(BUILD)/plugin/rootfs/sys
	cp $(BUILD)/cargo-volume-plugin $(BUILD)/plugin/rootfs/cargo-volume-plugin
	cp config.json $(BUILD)/plugin/config.json

plugin-create: plugin ## Create and enable the managed plugin on the current engine (PLUGIN_NAME, PLUGIN_TAG)
	-docker plugin disable -f $(PLUGIN_REF) >/dev/null 2>&1
	-docker plugin rm -f $(PLUGIN_REF) >/dev/null 2>&1
	# The state mount's source; engines do not create it.
	mkdir -p -m 0700 "$$(docker info -f '{{.DockerRootDir}}')/plugins/cargo"
	docker plugin create $(PLUGIN_REF) $(BUILD)/plugin
	docker plugin enable $(PLUGIN_REF)

install: cli plugin-create ## Install the CLI plugin into ~/.docker/cli-plugins and the managed plugin on the current engine
	mkdir -p $(HOME)/.docker/cli-plugins
	install -m 0755 $(BUILD)/docker-migrate $(HOME)/.docker/cli-plugins/docker-migrate

# The pushed rootfs names its own reference. Besides being useful to read, it
# makes its content differ from a locally created cargo:latest: engines
# refuse `plugin create` of a rootfs identical to an installed plugin's.
push: plugin ## Push the managed plugin to REGISTRY (make push REGISTRY=host:port)
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port" >&2; exit 2; }
	rm -rf $(BUILD)/plugin-push && cp -a $(BUILD)/plugin $(BUILD)/plugin-push
	mkdir -p $(BUILD)/plugin-push/rootfs/etc/cargo
	echo "$(PLUGIN_REF)" > $(BUILD)/plugin-push/rootfs/etc/cargo/plugin-ref
	-docker plugin rm -f $(PLUGIN_REF) >/dev/null 2>&1
	docker plugin create $(PLUGIN_REF) $(BUILD)/plugin-push
	docker plugin push $(PLUGIN_REF)
	docker plugin rm $(PLUGIN_REF)

test: test-unit test-fuzz test-e2e test-engine26 test-engine28 test-engine28-classic test-engine28-c8d ## Run all tests: unit tests, brief fuzzing, then tests on real engines (root)

test-unit: ## Unit tests of pure logic
	$(GO) test -count=1 -tags "$(TEST_TAGS)" ./internal/... ./cli-plugin/... ./volume-plugin/...

# Each fuzz target for a few seconds: the hostile-input parsers of the peer
# protocol and the manifest (go test -fuzz takes one target at a time).
FUZZ_TIME ?= 20000x
FUZZ_TARGETS := internal/peer:FuzzParseRange internal/peer:FuzzContentRange internal/peer:FuzzServerRequest \
	internal/peer:FuzzBatchStream internal/peer:FuzzReadRange internal/manifest:FuzzDecode

test-fuzz: ## Run each fuzz target for FUZZ_TIME (20000 inputs: a count, not a duration, so the fuzzer never stops mid-input on a deadline)
	@mkdir -p $(BUILD); set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZ_TIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZ_TIME) -tags "$(TEST_TAGS)" ./$${t%%:*}/ >$(BUILD)/fuzz.log 2>&1 \
			|| { cat $(BUILD)/fuzz.log; exit 1; }; \
	done

test-build: ## Build the CLI and plugin with failpoints into build/test, for the real-engine tests
	$(MAKE) --no-print-directory cli plugin BUILD=$(TEST_BUILD) TAGS="$(TEST_TAGS)"

test-e2e: test-build ## Tests on real dockerd engines in network namespaces (root)
	CARGO_BUILD=$(TEST_BUILD) $(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout $(TEST_TIMEOUT) -p 1 -v ./tests/...

test-engine26: test-build ## The migrate and volume tests again, on Debian trixie's Engine 26.1 (fetched, not installed; root)
	CARGO_ENGINE_PATH=$$(tests/engines.sh trixie) CARGO_BUILD=$(TEST_BUILD) \
		$(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout $(TEST_TIMEOUT) -p 1 -v ./tests/migrate ./tests/volume

# tests/live asks the harness for CRIU (tests/engines.sh criu fetches it
# into /var/tmp/cargo-engines/criu unless CARGO_CRIU_PATH names one).
test-engine28: test-build ## The live-migration tests again, on Debian forky's Engine 28.5 and containerd 2.1 (fetched, not installed; root)
	CARGO_ENGINE_PATH=$$(tests/engines.sh forky) CARGO_BUILD=$(TEST_BUILD) \
		$(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout $(TEST_TIMEOUT) -p 1 -v ./tests/live

# Engine 28.5 once per image store. tests/mixed (h1 the machine's 20.10,
# h2 forky's 28.5) runs in test-e2e on the classic store and here on the
# containerd one.
test-engine28-classic: test-build ## The migrate and volume tests on Engine 28.5 with the classic image store (root)
	CARGO_ENGINE_PATH=$$(tests/engines.sh forky) CARGO_BUILD=$(TEST_BUILD) \
		$(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout $(TEST_TIMEOUT) -p 1 -v ./tests/migrate ./tests/volume

test-engine28-c8d: test-build ## The migrate, volume and mixed-version tests on Engine 28.5 with the containerd image store (root)
	CARGO_CONTAINERD_STORE=1 CARGO_ENGINE_PATH=$$(tests/engines.sh forky) CARGO_BUILD=$(TEST_BUILD) \
		$(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout $(TEST_TIMEOUT) -p 1 -v ./tests/migrate ./tests/volume ./tests/mixed

bench: plugin ## Benchmark federated volumes against an rsync daemon and native reads, then bench-scale (root)
	tests/bench/federation.sh
	$(MAKE) --no-print-directory bench-scale
	$(MAKE) --no-print-directory bench-downtime

SCALE_FILES ?= 1000000
bench-scale: test-build ## The target plugin killed while copying SCALE_FILES small files: it answers within a second and resumes (root)
	CARGO_SCALE_FILES=$(SCALE_FILES) CARGO_BUILD=$(TEST_BUILD) $(GO) test -count=1 -tags "$(TEST_TAGS)" -timeout 60m -p 1 -v \
		-run '^TestTargetPluginKilledAtScale$$' ./tests/federation

bench-live: plugin cli ## Benchmark live moves against an rsync copy of the same checkpoint (root)
	CARGO_BUILD=$(abspath $(BUILD)) tests/bench/live.sh

bench-downtime: plugin cli ## A move's downtime by volume size and file count against naive and two-pass rsync and the engine's create + start; charts in docs/perf (root)
	CARGO_BUILD=$(abspath $(BUILD)) tests/bench/downtime.sh

demo: cli plugin ## Two local engines with cargo; docker migrate a container between them, show the copy (root)
	tests/demo.sh

demo-down: ## Stop the demo's engines and remove their state
	tests/hosts.sh down -p demo

vet: lint ## go vet, gofmt, go mod tidy and the linter
	$(GO) vet -tags "$(TEST_TAGS)" ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) mod tidy -diff

lint: $(GOLANGCI_LINT) ## golangci-lint with .golangci.yml
	$(GOLANGCI_LINT) run ./...

# The linter is built from source at a pinned version, through the Go
# module proxy like every other module.
$(GOLANGCI_LINT):
	mkdir -p $(dir $@)
	GOBIN=$(dir $@) CGO_ENABLED=1 $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(dir $@)golangci-lint $@

clean: ## Remove build output
	rm -rf $(BUILD)
