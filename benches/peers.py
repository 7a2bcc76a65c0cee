#!/usr/bin/env python3
"""Peer run: llama.cpp (llama-cpp-python, same GGUF) and onnxruntime-genai (same model folder),
measured with the same prompts as `attune bench`: batch 1, greedy, 2 threads, a 256-token prompt for
prefill and 128 new tokens for decode. Prints one JSON object per runtime (medians over --runs).

    python benches/peers.py --gguf G --model-dir D --prompt-ids ids.json [--runs 5]
"""
import argparse, json, os, shutil, statistics, tempfile, time

import numpy as np


def bench_llama(gguf, prompt, short, new, runs, threads):
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
    pre, dec = [], []
    for r in range(runs + 1):
        llm.reset()
        t = time.perf_counter(); llm.eval(prompt); p = time.perf_counter() - t
        llm.reset()
        llm.eval(short)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(new):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        d = time.perf_counter() - t
        if r:
            pre.append(len(prompt) / p); dec.append(new / d)
    return {"runtime": "llama.cpp (llama-cpp-python)", "prefill_tok_s_median": statistics.median(pre),
            "decode_tok_s_median": statistics.median(dec), "decode_tok_s_runs": dec}


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
    pre, dec = [], []
    for r in range(runs + 1):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + 1, do_sample=False)
        g = og.Generator(model, params)
        t = time.perf_counter(); g.append_tokens(prompt); p = time.perf_counter() - t
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
            pre.append(len(prompt) / p); dec.append(n / d)
    shutil.rmtree(tmp)
    return {"runtime": "onnxruntime-genai", "prefill_tok_s_median": statistics.median(pre),
            "decode_tok_s_median": statistics.median(dec), "decode_tok_s_runs": dec}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompt-ids", required=True, help="JSON with 'prompt' (256 ids) and 'short' (16 ids)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    ids = json.load(open(a.prompt_ids))
    out = []
    for fn, arg in ((bench_llama, a.gguf), (bench_genai, a.model_dir)):
        try:
            out.append(fn(arg, ids["prompt"], ids["short"], a.new, a.runs, a.threads))
        except Exception as e:  # a peer that fails is reported, not fatal
            out.append({"runtime": fn.__name__, "error": repr(e)})
        print(json.dumps(out[-1]), flush=True)


if __name__ == "__main__":
    main()
