# llorch: the two commands are `make demo` and `make test`.
# Everything else here is a building block of those two, or a benchmark.

SHELL := /bin/bash
export LLORCH_CACHE ?= $(HOME)/.cache/llorch
MODEL ?= $(LLORCH_CACHE)/models/gemma-3-270m-q4_k_m.gguf

.PHONY: help demo test model manifests chart fmt bench-cpu bench-gguf bench-tokenizer bench-serve bench-gateway bench-operator llama-cpp cluster-up cluster-down fuzz-gguf

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## The whole system: local cluster, operator, a ModelWorker to Ready, a streamed completion (root).
	@scripts/demo.sh

test: ## Format check, clippy -D warnings, and every test (what CI runs).
	@scripts/test.sh

model: ## Fetch the default model (Gemma 3 270M Q4_K_M) into the cache.
	@scripts/fetch-model.sh "$(MODEL)" >/dev/null

manifests: ## Regenerate the CRD (manifests/crd.yaml, the chart's crds/) and manifests/install.yaml.
	@cargo run --quiet -p llorch-operator -- crd > manifests/crd.yaml
	@cp manifests/crd.yaml charts/llorch-operator/crds/modelworkers.llorch.dev.yaml
	@"$$(scripts/python-env.sh)/bin/python" scripts/render-install.py

chart: ## Lint and render the Helm chart, check install.yaml; lint the Dockerfiles.
	@tests/chart/check.sh
	@tests/images/lint.sh

fmt: ## Format the code.
	cargo fmt --all

bench-gguf: model ## GGUF open time and dequantization throughput.
	cargo run --release -p worker-gguf --example gguf-bench -- "$(MODEL)"

bench-tokenizer: model ## Tokenizer throughput against the tokenizers crate.
	@scripts/llama-cpp-src.sh >/dev/null
	cargo run --release -p worker-tokenizer --example tokenizer-bench

bench-cpu: ## llorch-worker bench vs llama-bench: Gemma 3 270M and 1B-shaped Llama models, medians and ratios.
	@scripts/bench-cpu.sh

bench-serve: model ## Concurrent streams: llorch-worker serve vs llama-server.
	@scripts/bench-serve.sh

bench-gateway: model ## The gateway: overhead against a worker straight, and prefix affinity over two replicas.
	@scripts/bench-gateway.sh

bench-operator: ## 200 ModelWorkers on the local cluster: time to children and status, idle writes, RSS (root).
	@scripts/bench-operator.sh 200

cluster-up: ## Start the local Kubernetes control plane (root); prints the kubeconfig path.
	@tests/cluster/up.sh

cluster-down: ## Stop the local Kubernetes control plane and remove its data.
	@tests/cluster/down.sh

llama-cpp: ## Build the reference llama.cpp (benchmarks, reference files).
	@scripts/llama-cpp-build.sh

fuzz-gguf: ## Fuzz the GGUF reader for 5 minutes (needs nightly and cargo-fuzz).
	cd crates/worker-gguf && cargo +nightly fuzz run parse -- -max_total_time=300 -max_len=8192
