# tlsgate Makefile. `make` (or `make help`) lists the targets.
# Style after connect-go: bash with strict flags, self-documenting targets
# (a `## comment` after each public target), tools pinned here and installed
# into ./bin so that they never enter the main go.mod.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables
MAKEFLAGS += --no-builtin-rules
MAKEFLAGS += --no-print-directory

# ---- Tool versions ---------------------------------------------------------
GOLANGCI_LINT_VERSION := v2.15.0
BUF_VERSION := v1.75.0
GRPCURL_VERSION := v1.9.3
# deadcode is golang.org/x/tools/cmd/deadcode, at this x/tools version.
DEADCODE_VERSION := v0.52.0

# ---- Settings (override on the command line: `make test TEST_TIMEOUT=1h`) ---
GO ?= go
NODE ?= node
NPM ?= npm
BIN := $(CURDIR)/bin
# The TypeScript client: npm packages pinned by its package-lock.json.
TS_DIR := sdk/ts
# Arguments passed to `bin/tlsgate serve` by `make run`, e.g. ARGS='--handler discard'.
ARGS ?=
# Packages for test, lint and bench.
PKGS ?= ./...
# Generous: the loss-proof tests repeat scenarios hundreds of times under -race.
TEST_TIMEOUT ?= 30m
# Extra flags for `go test`, e.g. TESTFLAGS='-run TestTakeover -v'.
TESTFLAGS ?=
# CPU hogs beside `make test-stress` (default: one per CPU).
STRESS_HOGS ?= $(shell nproc 2>/dev/null || echo 2)
# Benchmark selection (a -bench regexp).
BENCH ?= .
# How long `make fuzz` runs each fuzz target (a duration, or Nx for N runs).
FUZZTIME ?= 20s

GOLANGCI_LINT := $(BIN)/golangci-lint
# Marks which version is in bin/, so that bumping the pin reinstalls it.
GOLANGCI_LINT_STAMP := $(BIN)/.golangci-lint-$(GOLANGCI_LINT_VERSION)
BUF := $(BIN)/buf
BUF_STAMP := $(BIN)/.buf-$(BUF_VERSION)
GRPCURL := $(BIN)/grpcurl
DEADCODE := $(BIN)/deadcode
DEADCODE_STAMP := $(BIN)/.deadcode-$(DEADCODE_VERSION)
GRPCURL_STAMP := $(BIN)/.grpcurl-$(GRPCURL_VERSION)
# Written by npm ci: newer than package-lock.json once node_modules matches it.
TS_DEPS_STAMP := $(TS_DIR)/node_modules/.package-lock.json

.PHONY: help
help: ## Describe the make targets (default)
	@echo 'Usage: make <target> [ARGS=...] [PKGS=...] [TESTFLAGS=...]'
	@echo
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/tlsgate
	$(GO) build -o $(BIN)/tlsgate ./cmd/tlsgate

.PHONY: run
run: build ## Run bin/tlsgate serve on its dev defaults (self-signed cert, echo); pass flags with ARGS='...'
	$(BIN)/tlsgate serve $(ARGS)

.PHONY: test
test: $(GRPCURL_STAMP) ## Run all tests under the race detector (end-to-end tests use bin/grpcurl, pinned)
	TLSGATE_GRPCURL=$(GRPCURL) $(GO) test -race -count=1 -timeout=$(TEST_TIMEOUT) $(TESTFLAGS) $(PKGS)

.PHONY: test-stress
test-stress: $(GRPCURL_STAMP) ## Run `make test` beside STRESS_HOGS busy loops: tests must wait on events, not on an idle machine
	@hogs=(); trap 'kill "$${hogs[@]}" 2>/dev/null || true' EXIT; \
	for _ in $$(seq $(STRESS_HOGS)); do (while :; do :; done) & hogs+=($$!); done; \
	echo "test-stress: $(STRESS_HOGS) CPU hogs running (pids $${hogs[*]})"; \
	$(MAKE) test

.PHONY: test-ts
test-ts: build $(TS_DEPS_STAMP) ## Run the TypeScript client's end-to-end test (sdk/ts, node --test) against bin/tlsgate
	cd $(TS_DIR) && TLSGATE_BIN=$(BIN)/tlsgate $(NODE) --test test/*.test.js

.PHONY: lint
lint: $(GOLANGCI_LINT_STAMP) $(BUF_STAMP) $(DEADCODE_STAMP) ## Run go vet, golangci-lint, deadcode, buf lint and buf format (tools pinned, installed into bin/)
	$(GO) vet $(PKGS)
	$(GOLANGCI_LINT) run $(PKGS)
	@# deadcode: no function unreachable from main or from a test.
	@echo "$(DEADCODE) -test $(PKGS)"
	@dead=$$($(DEADCODE) -test $(PKGS)) || exit 1; if [ -n "$$dead" ]; then echo "$$dead"; echo "deadcode: unreachable functions (delete them, or test them if they are API)"; exit 1; fi
	$(BUF) lint
	$(BUF) format -d --exit-code

.PHONY: lintfix
lintfix: $(GOLANGCI_LINT_STAMP) ## Let golangci-lint fix what it can
	$(GOLANGCI_LINT) run --fix $(PKGS)

.PHONY: bench
bench: ## Run the Go benchmarks with allocation counts
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem $(PKGS)

.PHONY: bench-ci
bench-ci: ## Run every benchmark briefly (100 iterations) so they keep working; no timing checks
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=100x $(PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target in ./wire for FUZZTIME (default 20s), one at a time; a crash is saved to wire/testdata/fuzz
	@targets=$$($(GO) test -list='^Fuzz' ./wire | grep '^Fuzz'); \
	for t in $$targets; do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) ./wire; \
	done

.PHONY: fmt
fmt: ## Format the Go sources (gofmt -s)
	git ls-files -z --cached --others --exclude-standard -- '*.go' | xargs -0 -r gofmt -s -w

.PHONY: tidy
tidy: ## Tidy go.mod and go.sum
	$(GO) mod tidy

.PHONY: clean
clean: ## Delete bin/ (the tlsgate binary and the pinned tools)
	rm -rf $(BIN)

# ---- Code generation ---------------------------------------------------------
.PHONY: generate
generate: $(BUF_STAMP) generate-ts ## Regenerate gen/ and sdk/ts/gen/ from proto/ (offline: buf in bin/, plugins via go.mod's tool directive and sdk/ts/node_modules)
	$(BUF) generate

.PHONY: generate-ts
generate-ts: $(BUF_STAMP) $(TS_DEPS_STAMP) ## Regenerate sdk/ts/gen/ only, with protoc-gen-es from sdk/ts/node_modules (offline once installed)
	$(BUF) generate --template $(TS_DIR)/buf.gen.yaml

.PHONY: check-generate
check-generate: generate ## Fail when gen/ or sdk/ts/gen/ is stale (CI runs it)
	@if [ -n "$$(git status --porcelain -- gen $(TS_DIR)/gen)" ]; then \
		git status --porcelain -- gen $(TS_DIR)/gen; git diff --stat -- gen $(TS_DIR)/gen; \
		echo 'gen/ or sdk/ts/gen/ is stale: run `make generate` and commit the result'; exit 1; \
	fi

.PHONY: tools
tools: $(GOLANGCI_LINT_STAMP) $(BUF_STAMP) $(DEADCODE_STAMP) $(GRPCURL_STAMP) ts-deps ## Install the pinned tools into bin/ and the npm packages into sdk/ts/node_modules

.PHONY: ts-deps
ts-deps: $(TS_DEPS_STAMP) ## Install sdk/ts/node_modules with npm ci (pinned by sdk/ts/package-lock.json)

# ---- Tools -----------------------------------------------------------------
$(GOLANGCI_LINT_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@rm -f $(BIN)/.golangci-lint-*
	@touch $@

$(BUF_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@rm -f $(BIN)/.buf-*
	@touch $@

# --prefer-offline: reinstalling from npm's cache needs no network.
$(TS_DEPS_STAMP): $(TS_DIR)/package-lock.json $(TS_DIR)/package.json
	cd $(TS_DIR) && $(NPM) ci --prefer-offline --no-audit --no-fund
	@touch $@

$(DEADCODE_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION)
	@rm -f $(BIN)/.deadcode-*
	@touch $@

$(GRPCURL_STAMP):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@rm -f $(BIN)/.grpcurl-*
	@touch $@
