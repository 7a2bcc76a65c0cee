#!/usr/bin/env bash
# `make bench-peers`: Attune, llama.cpp and onnxruntime-genai on the same weights, in one run, with
# the same prompts (batch 1, greedy, 2 threads, 256-token prefill, 128 new tokens). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-models/smollm2-135m-instruct}
gguf=${GGUF:-$(find .cache -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)}
runs=${RUNS:-5}
if [ ! -x .venv-peers/bin/python ]; then
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q -r benches/requirements-peers.txt   # llama-cpp-python builds from source
fi
out=target/bench-peers; mkdir -p "$out"
cargo run --release -q --bin attune -- bench --model "$model" --threads 2 --runs "$runs" --new-tokens 128 \
  --prompt-tokens 256 --json "$out/attune.json" --dump-prompt "$out/prompt_ids.json" > /dev/null
.venv-peers/bin/python benches/peers.py --gguf "$gguf" --model-dir "$model" --prompt-ids "$out/prompt_ids.json" \
  --runs "$runs" > "$out/peers.jsonl"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(f"{d}/attune.json"))
print(f"attune: decode {a['decode_tok_s_median']:.1f} tok/s, prefill {a['prefill_tok_s_median']:.1f} tok/s, TTFT {a['ttft_ms_median']:.1f} ms, peak RSS {a['peak_rss_mib']:.0f} MiB")
for line in open(f"{d}/peers.jsonl"):
    p = json.loads(line)
    if "error" in p:
        print(f"{p['runtime']}: failed: {p['error']}"); continue
    print(f"{p['runtime']}: decode {p['decode_tok_s_median']:.1f} tok/s, prefill {p['prefill_tok_s_median']:.1f} tok/s -> "
          f"attune/peer decode {a['decode_tok_s_median']/p['decode_tok_s_median']:.2f}x, prefill {a['prefill_tok_s_median']/p['prefill_tok_s_median']:.2f}x")
PY
