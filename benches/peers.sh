#!/usr/bin/env bash
# `make bench-peers`: Attune, llama.cpp and onnxruntime-genai on the same weights, in one run, with
# the same prompts (batch 1, greedy, 2 threads, 256-token prefill, 128 new tokens). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-models/smollm2-135m-instruct}
gguf=${GGUF:-$(find .cache -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)}
runs=${RUNS:-3}
if [ ! -x .venv-peers/bin/python ]; then
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q -r benches/requirements-peers.txt   # llama-cpp-python builds from source
fi
rounds=${ROUNDS:-3}
out=target/bench-peers; mkdir -p "$out"; rm -f "$out"/round-*.json "$out"/round-*.jsonl
# Rounds alternate the three runtimes, so that a noisy stretch of a shared machine hits all of them;
# the summary quotes the median over rounds of each round's ratio.
for r in $(seq 1 "$rounds"); do
  cargo run --release -q --bin attune -- bench --model "$model" --threads 2 --runs "$runs" --new-tokens 128 \
    --prompt-tokens 256 --json "$out/round-$r.json" --dump-prompt "$out/prompt_ids.json" > /dev/null
  .venv-peers/bin/python benches/peers.py --gguf "$gguf" --model-dir "$model" --prompt-ids "$out/prompt_ids.json" \
    --runs "$runs" > "$out/round-$r.jsonl"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
rows = {}
for r in range(1, rounds + 1):
    a = json.load(open(f"{d}/round-{r}.json"))
    rows.setdefault("attune", []).append((a["decode_tok_s_median"], a["prefill_tok_s_median"], a))
    for line in open(f"{d}/round-{r}.jsonl"):
        p = json.loads(line)
        if "error" in p:
            print(f"round {r}: {p['runtime']} failed: {p['error']}"); continue
        rows.setdefault(p["runtime"], []).append((p["decode_tok_s_median"], p["prefill_tok_s_median"], a))
att = rows.pop("attune")
print(f"attune: decode {med(x[0] for x in att):.1f} tok/s, prefill {med(x[1] for x in att):.1f} tok/s, "
      f"TTFT {med(x[2]['ttft_ms_median'] for x in att):.1f} ms, peak RSS {max(x[2]['peak_rss_mib'] for x in att):.0f} MiB "
      f"(medians over {rounds} rounds)")
summary = {"rounds": rounds, "attune": [{"decode": x[0], "prefill": x[1]} for x in att], "peers": {}}
for name, xs in rows.items():
    dec = [a["decode_tok_s_median"] / p for p, _, a in xs]
    pre = [a["prefill_tok_s_median"] / q for _, q, a in xs]
    print(f"{name}: decode {med(x[0] for x in xs):.1f} tok/s, prefill {med(x[1] for x in xs):.1f} tok/s -> "
          f"attune/peer decode {med(dec):.2f}x (rounds {', '.join(f'{x:.2f}' for x in dec)}), "
          f"prefill {med(pre):.2f}x (rounds {', '.join(f'{x:.2f}' for x in pre)})")
    summary["peers"][name] = {"decode": [x[0] for x in xs], "prefill": [x[1] for x in xs], "decode_ratio": dec, "prefill_ratio": pre}
json.dump(summary, open(f"{d}/summary.json", "w"), indent=1)
PY
