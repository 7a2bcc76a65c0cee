#!/usr/bin/env python3
"""Peer runs for `make bench-peers` (benches/peers.sh): llama.cpp (llama-cpp-python, same GGUF) and
onnxruntime-genai (same model folder), measured with the same prompts as `attune bench`: batch 1,
greedy, 2 threads, a 256-token prompt for prefill and time to first token, 128 new tokens for decode.
Each runtime runs in its own process, so that its peak RSS (VmHWM, the Python interpreter included)
is its own. Prints one JSON object (medians over --runs, after one warm-up run).

    python benches/peers.py llama --gguf G --prompt-ids ids.json [--runs 3]
    python benches/peers.py genai --model-dir D --prompt-ids ids.json [--runs 3]
    python benches/peers.py summary DIR ROUNDS     (the tables of a peers.sh run)
"""
import argparse, json, os, resource, shutil, statistics, tempfile, time

med = statistics.median


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_llama(gguf, prompt, short, new, runs, threads):
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
    pre, ttft, dec = [], [], []
    for r in range(runs + 1):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        p = time.perf_counter() - t
        int(np.argmax(llm.scores[llm.n_tokens - 1]))
        f = time.perf_counter() - t
        llm.reset()
        llm.eval(short)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(new):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        d = time.perf_counter() - t
        if r:
            pre.append(len(prompt) / p); ttft.append(f * 1000.0); dec.append(new / d)
    return {"runtime": "llama.cpp", "prefill_tok_s_median": med(pre), "ttft_ms_median": med(ttft),
            "decode_tok_s_median": med(dec), "decode_tok_s_runs": dec, "peak_rss_mib": peak_rss_mib()}


def bench_genai(model_dir, prompt, short, new, runs, threads):
    import onnxruntime_genai as og
    tmp = tempfile.mkdtemp()
    for f in os.listdir(model_dir):
        if f != "genai_config.json":
            os.symlink(os.path.abspath(os.path.join(model_dir, f)), os.path.join(tmp, f))
    cfg = json.load(open(os.path.join(model_dir, "genai_config.json")))
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    so["intra_op_num_threads"] = threads
    so["inter_op_num_threads"] = 1
    json.dump(cfg, open(os.path.join(tmp, "genai_config.json"), "w"))
    model = og.Model(tmp)
    pre, ttft, dec = [], [], []
    for r in range(runs + 1):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + 1, do_sample=False)
        g = og.Generator(model, params)
        t = time.perf_counter()
        g.append_tokens(prompt)
        p = time.perf_counter() - t
        g.generate_next_token()  # picks the first token from the prompt's logits
        f = time.perf_counter() - t
        del g
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(short) + new + 1, min_length=len(short) + new + 1, do_sample=False)
        g = og.Generator(model, params)
        g.append_tokens(short)
        t = time.perf_counter()
        n = 0
        while n < new and not g.is_done():
            g.generate_next_token(); n += 1
        d = time.perf_counter() - t
        del g
        if r:
            pre.append(len(prompt) / p); ttft.append(f * 1000.0); dec.append(n / d)
    shutil.rmtree(tmp)
    return {"runtime": "onnxruntime-genai", "prefill_tok_s_median": med(pre), "ttft_ms_median": med(ttft),
            "decode_tok_s_median": med(dec), "decode_tok_s_runs": dec, "peak_rss_mib": peak_rss_mib()}


def summary(d, rounds):
    """Per runtime: medians over rounds of decode, prefill, TTFT and the largest peak RSS, and the
    median over rounds of each round's ratio Attune fast / runtime (same round)."""
    names = sorted({f[len("round-1-"):-len(".json")] for f in os.listdir(d) if f.startswith("round-1-")})
    data = {n: [json.load(open(f"{d}/round-{r}-{n}.json")) for r in range(1, rounds + 1)
                if os.path.exists(f"{d}/round-{r}-{n}.json")] for n in names}
    base = data.pop("attune-fast")
    rows = [("attune-fast", base)] + sorted(data.items())
    keys = (("decode_tok_s_median", "decode tok/s", True), ("prefill_tok_s_median", "prefill tok/s", True),
            ("ttft_ms_median", "TTFT ms", False))
    out = {"rounds": rounds, "runtimes": {}}
    print(f"Medians over {rounds} alternating rounds; ratios are Attune fast / runtime, per round, then the "
          "median (for TTFT and RSS, runtime / Attune fast: above 1 means Attune is ahead)")
    print("| runtime | decode tok/s | prefill tok/s | TTFT ms | peak RSS MiB | decode ratio | prefill ratio | TTFT ratio | RSS ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, xs in rows:
        ok = [x for x in xs if "error" not in x]
        if not ok:
            print(f"| {name} | failed: {xs[0].get('error') if xs else 'no result'} |"); continue
        vals = {k: med(x[k] for x in ok) for k, _, _ in keys}
        rss = max(x["peak_rss_mib"] for x in ok)
        pairs = [(b, x) for b, x in zip(base, xs) if "error" not in x]
        ratios = {k: [b[k] / x[k] if hi else x[k] / b[k] for b, x in pairs] for k, _, hi in keys}
        ratios["rss"] = [x["peak_rss_mib"] / b["peak_rss_mib"] for b, x in pairs]
        cells = " | ".join(f"{med(v):.2f}x ({', '.join(f'{r:.2f}' for r in v)})" if name != "attune-fast" else "-"
                           for v in (ratios["decode_tok_s_median"], ratios["prefill_tok_s_median"],
                                     ratios["ttft_ms_median"], ratios["rss"]))
        print(f"| {name} | {vals['decode_tok_s_median']:.1f} | {vals['prefill_tok_s_median']:.1f} | "
              f"{vals['ttft_ms_median']:.1f} | {rss:.0f} | {cells} |")
        out["runtimes"][name] = {"rounds": ok, "medians": vals, "peak_rss_mib": rss, "ratios": ratios}
    acc = os.path.join(d, "accuracy.json")
    if os.path.exists(acc):
        import sys
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
        from accuracy import table  # numpy only, no model needed
        rows_acc = json.load(open(acc))
        print("\nAccuracy against the float64 reference (models/accuracy.py, same run):")
        print(table(rows_acc))
        out["accuracy"] = rows_acc
    json.dump(out, open(f"{d}/summary.json", "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["llama", "genai", "summary"])
    ap.add_argument("dir", nargs="?", help="summary: the peers.sh output folder")
    ap.add_argument("rounds", nargs="?", type=int, help="summary: the number of rounds")
    ap.add_argument("--gguf")
    ap.add_argument("--model-dir")
    ap.add_argument("--prompt-ids", help="JSON with 'prompt' (256 ids) and 'short' (16 ids)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.what == "summary":
        return summary(a.dir, a.rounds)
    ids = json.load(open(a.prompt_ids))
    fn, arg = (bench_llama, a.gguf) if a.what == "llama" else (bench_genai, a.model_dir)
    try:
        res = fn(arg, ids["prompt"], ids["short"], a.new, a.runs, a.threads)
    except Exception as e:  # a peer that fails is reported, not fatal
        res = {"runtime": a.what, "error": repr(e)}
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
