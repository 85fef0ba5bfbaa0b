#!/usr/bin/env bash
# Prompt caching: the time to answer a long prompt cold, and the next turn
# of the same conversation (the long prompt plus a short question), which
# reuses the first turn's cache; then a second user's request with the same
# long prompt while the first user's answer is still streaming, which
# copies the rows from the busy slot. Each round starts the prompt with
# another word, so every cold request is cold. Prints Markdown tables for
# BENCHMARKS.md. Not part of `make test`.
#   scripts/bench-prompt-cache.sh [MODEL] [ROUNDS]
# LLORCH_BIN: a built llorch-worker (default: a release build). REPEAT: how
# many times the history sentence repeats (default 60; fewer for a model
# whose vocabulary spells English byte by byte, as the synthetic ones do).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$("$root/scripts/fetch-model.sh")}"
rounds="${2:-3}"
bin="${LLORCH_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -p llorch-worker --bin llorch-worker >&2)
    bin="$root/target/release/llorch-worker"
fi
port=18277
"$bin" serve --model "$model" --host 127.0.0.1 --port "$port" --threads 2 --ctx-size 4096 \
    >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.2
done

# Seconds for one completion of 1 token, and the cached prompt tokens.
ask() {
    python3 - "$port" "$1" <<'PY'
import json, sys, time, urllib.request
port, prompt = sys.argv[1], sys.argv[2]
body = json.dumps({"prompt": prompt, "max_tokens": 1, "temperature": 0}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                             {"Content-Type": "application/json"})
t = time.perf_counter()
r = json.load(urllib.request.urlopen(req))
dt = time.perf_counter() - t
u = r["usage"]
print(f"{dt:.3f} {u['prompt_tokens']} {u['prompt_tokens_details']['cached_tokens']}")
PY
}

history="$(python3 -c "print(' '.join(['The committee reviewed the quarterly report line by line, and every figure was checked against the ledger.'] * ${REPEAT:-60}))")"
echo "| round | prompt tokens (cold) | cold s | next turn tokens | cached | warm s | cold / warm |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq "$rounds"); do
    first="Round $r. $history"
    read -r cold_s cold_n _ <<<"$(ask "$first")"
    read -r warm_s warm_n cached <<<"$(ask "$first Question: what did the committee check?")"
    ratio="$(python3 -c "print(f'{$cold_s / $warm_s:.1f}×')")"
    echo "| $r | $cold_n | $cold_s | $warm_n | $cached | $warm_s | $ratio |"
done

echo
echo "| round | shared prompt tokens | cold s (first user) | second user, while the first streams: s | cached | cold / second |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq "$rounds"); do
    python3 - "$port" "Shared $r. $history" <<'PY'
import json, sys, threading, time, urllib.request
port, shared = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/v1/completions"
def post(body):
    return urllib.request.urlopen(urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}))
first_token = threading.Event()
cold = {}
def first_user():
    t = time.perf_counter()
    with post({"prompt": shared, "max_tokens": 200, "temperature": 0, "stream": True}) as resp:
        for line in resp:
            if line.startswith(b"data: {") and not first_token.is_set():
                cold["s"] = time.perf_counter() - t
                first_token.set()
th = threading.Thread(target=first_user)
th.start()
first_token.wait()
t = time.perf_counter()
r = json.load(post({"prompt": shared + " Question: what is asked?", "max_tokens": 1, "temperature": 0}))
second = time.perf_counter() - t
th.join()
u = r["usage"]
print(f"| {sys.argv[2].split('.')[0].split()[1]} | {u['prompt_tokens']} | {cold['s']:.3f} | {second:.3f} | "
      f"{u['prompt_tokens_details']['cached_tokens']} | {cold['s'] / second:.1f}× |")
PY
done
