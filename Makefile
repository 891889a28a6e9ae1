# Kigumi. `make run` brings up the quickstart host; `make test` installs what
# the tests need and runs them. Both need root (tenant users are real Linux
# users).

GO        ?= go
BIN       := bin
QUICKSTART:= examples/quickstart
APP_WASM  := $(QUICKSTART)/build/app.wasm
HOST_HCL  := $(QUICKSTART)/host.hcl
KIGUMI    := $(BIN)/kigumi
# VERSION is what `kigumi version` prints: git describe, or dev outside git.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
AGENT_PID := $(QUICKSTART)/build/agent.pid
AGENT_LOG := $(QUICKSTART)/build/agent.log
AGENT_SOCK:= /var/lib/kigumi/quickstart/agent.sock

.PHONY: all build plugins wasm run stop run-ledger stop-ledger run-containers stop-containers test faults soak fuzz deps bench proto fmt vet clean

all: build

## build: bin/kigumi (first-party plugins compiled in) and the quickstart module
build: wasm
	$(GO) build -ldflags "$(LDFLAGS)" -o $(KIGUMI) ./cmd/kigumi

## plugins: standalone plugin binaries, for plugin_dir
plugins:
	$(GO) build -o $(BIN)/plugins/kigumi-runtime-wasm ./plugins/runtime-wasm
	$(GO) build -o $(BIN)/plugins/kigumi-statefs-fuse ./plugins/statefs-fuse
	$(GO) build -o $(BIN)/plugins/kigumi-ledger-xrpl ./plugins/ledger-xrpl

wasm: $(APP_WASM)

$(APP_WASM): $(wildcard $(QUICKSTART)/app/*.go)
	GOOS=wasip1 GOARCH=wasm $(GO) build -o $@ ./$(QUICKSTART)/app

## run: the quickstart under `kigumi agent`, in the background (FOREGROUND=1: in the foreground)
run: build
	$(KIGUMI) validate -c $(HOST_HCL)
	$(KIGUMI) plan -c $(HOST_HCL)
ifeq ($(FOREGROUND),1)
	$(KIGUMI) agent -c $(HOST_HCL)
else
	@if [ -f $(AGENT_PID) ] && kill -0 $$(cat $(AGENT_PID)) 2>/dev/null; then \
		echo "The agent already runs (pid $$(cat $(AGENT_PID)))."; \
	else \
		nohup $(KIGUMI) agent -c $(HOST_HCL) >$(AGENT_LOG) 2>&1 & echo $$! >$(AGENT_PID); \
	fi
	@for i in $$(seq 50); do [ -S $(AGENT_SOCK) ] && break; sleep 0.2; done
	$(KIGUMI) apply -c $(HOST_HCL) --auto-approve
	$(KIGUMI) status -c $(HOST_HCL)
	@sleep 1
	$(KIGUMI) logs -c $(HOST_HCL) alice/hello
	$(KIGUMI) logs -c $(HOST_HCL) bob/counter
	@echo
	@echo "The agent runs in the background (log: $(AGENT_LOG)). Edit $(QUICKSTART)/tenants/*.hcl"
	@echo "and it reconciles. 'make stop' stops it and destroys the quickstart."
endif

## stop: stop the background agent (workloads keep running), then destroy the quickstart's tenants
stop: build
	@if [ -f $(AGENT_PID) ]; then kill $$(cat $(AGENT_PID)) 2>/dev/null; \
		while kill -0 $$(cat $(AGENT_PID)) 2>/dev/null; do sleep 0.2; done; rm -f $(AGENT_PID); fi
	$(KIGUMI) destroy -c $(HOST_HCL) --auto-approve

## run-ledger: the lease market on one machine (examples/ledger): the fake ledger (a test double), a host agent, a tenant's lease
run-ledger: build
	$(GO) build -o $(BIN)/fakeledger ./plugins/ledger-xrpl/internal/fakeledger/cmd/fakeledger
	./examples/ledger/run.sh

## stop-ledger: remove all of the ledger example: agent, lease tenants, fake ledger, wallets, state
stop-ledger: build
	./examples/ledger/stop.sh

## run-containers: containers from a registry on the example's own containerd (examples/containers)
run-containers: build
	./examples/containers/run.sh

## stop-containers: remove all of the containers example: tenants, users, containerd, registry, their dirs and mounts
stop-containers: build
	./examples/containers/stop.sh

## deps: install what the tests need (idempotent; root)
deps:
	./.ci/install-deps

## test: install what the tests need, then run every test, the fault suite and the fuzzers
test: deps vet
	$(GO) test -count=1 -timeout 20m -skip '^TestFaults$$' ./...
	cd core/sdk && $(GO) test -count=1 -timeout 5m ./...
	$(MAKE) faults
	$(MAKE) fuzz

## faults: the fault-injection suite, bounded (30 agent kills...), with its summary
faults:
	$(GO) test -count=1 -timeout 15m -run '^TestFaults$$' -v ./cmd/kigumi

SOAK_SCALE ?= 10

## soak: the fault-injection suite at length (SOAK_SCALE times the counts: 300 agent kills)
soak:
	KIGUMI_FAULT_SCALE=$(SOAK_SCALE) $(GO) test -count=1 -timeout 4h -run '^TestFaults$$' -v ./cmd/kigumi

# Each fuzzer runs for a count of executions, not a duration: with a
# duration, Go's fuzz coordinator can fail a run that found nothing with
# "context deadline exceeded" when a worker is starved at the deadline
# (seen in CI on FuzzParseTenant). FUZZSCALE multiplies every count; the
# counts are about 10 s each on a 2-core machine.
FUZZSCALE ?= 1
# FUZZMINIMIZE bounds the minimization of each new interesting input. Go's
# default (60s) let the policy fuzzer, whose inputs each compile CEL
# (about 1ms), spend its whole run minimizing its first find.
FUZZMINIMIZE ?= 200x
FUZZ = $(GO) test -run '^$$' -fuzzminimizetime $(FUZZMINIMIZE)

## fuzz: run each fuzzer for a fixed count of executions (spec, policy and module loaders)
fuzz:
	$(FUZZ) -fuzz '^FuzzLoadHost$$' -fuzztime $$((40000 * $(FUZZSCALE)))x ./core/spec
	$(FUZZ) -fuzz '^FuzzParseTenant$$' -fuzztime $$((30000 * $(FUZZSCALE)))x ./core/spec
	$(FUZZ) -fuzz '^FuzzLoad$$' -fuzztime $$((15000 * $(FUZZSCALE)))x ./core/policy
	$(FUZZ) -fuzz '^FuzzScanModule$$' -fuzztime $$((40000 * $(FUZZSCALE)))x ./plugins/runtime-wasm/wasmruntime

## bench: benchmarks, then the table of the performance targets (cmd/benchtable)
bench: build
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench . -benchmem -skip 'Scale|LeaseLatency|Ctr(StartLatency|Scale50|Daemon|Network)' ./... | tee $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'LeaseLatency' -benchtime 100x ./plugins/ledger-xrpl/xrplledger | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'Scale(Converge|EmptyReconcile)' -benchtime 1x ./core/agent | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'ScalePlanAgent' -benchtime 5x ./core/agent | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'ScaleSpecLatency' -benchtime 100x ./core/agent | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'ScalePlanCLI' -benchtime 5x ./cmd/kigumi | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'CtrStartLatency' -benchtime 20x ./plugins/runtime-containerd/ctrruntime | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'CtrScale50' -benchtime 1x ./plugins/runtime-containerd/ctrruntime | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'CtrDaemon' -benchtime 3x ./plugins/runtime-containerd/ctrruntime | tee -a $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench 'CtrNetwork' -benchtime 10x ./plugins/runtime-containerd/ctrruntime | tee -a $(BIN)/bench.txt
	cd core/sdk && $(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) run ./cmd/benchtable < $(BIN)/bench.txt

## proto: regenerate the plugin protocol's Go code (needs protoc)
proto:
	cd core/sdk && $(GO) generate ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...
	cd core/sdk && $(GO) vet ./...

clean:
	rm -rf $(BIN) $(QUICKSTART)/build
