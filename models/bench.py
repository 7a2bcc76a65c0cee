#!/usr/bin/env python3
"""Decode-speed benchmark of a converted model folder with plain onnxruntime (batch 1, greedy).

    python models/bench.py MODEL_DIR [--threads 2] [--new 128] [--repeat 1]

Prefills a short chat prompt, then generates --new tokens one at a time, feeding the presents
back as pasts (the per-step copies a Python loop cannot avoid are included in the timing).
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--prompt", default="<|im_start|>user\nTell me a short story about a robot "
                                        "who learns to paint.<|im_end|>\n<|im_start|>assistant\n")
    a = ap.parse_args()
    d = a.model_dir
    dec = json.load(open(os.path.join(d, "genai_config.json")))["model"]["decoder"]
    L, nkv, hd = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    t0 = time.perf_counter()
    sess = ort.InferenceSession(os.path.join(d, "model.onnx"), so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    prompt = tok.encode(a.prompt).ids
    out_names = [o.name for o in sess.get_outputs()]
    present_idx = [out_names.index(f"present.{i}.{kv}") for i in range(L) for kv in ("key", "value")]
    past_names = [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    results = []
    for _ in range(a.repeat):
        pasts = [np.zeros((1, nkv, 0, hd), np.float32)] * (2 * L)
        ids = prompt
        total = 0
        gen = []
        t_first = None
        t0 = time.perf_counter()
        for step in range(a.new + 1):
            total += len(ids)
            feed = {"input_ids": np.array([ids], np.int64),
                    "attention_mask": np.ones((1, total), np.int64)}
            feed.update(zip(past_names, pasts))
            outs = sess.run(None, feed)
            nxt = int(outs[0][0, -1].argmax())
            pasts = [outs[j] for j in present_idx]
            ids = [nxt]
            if step == 0:
                t_first = time.perf_counter()
            else:
                gen.append(nxt)
        t1 = time.perf_counter()
        results.append({"prefill_tokens": len(prompt), "prefill_s": t_first - t0,
                        "decode_tok_s": a.new / (t1 - t_first)})
    best = max(r["decode_tok_s"] for r in results)
    print(json.dumps({"model": d, "load_s": round(load_s, 3), "runs": results,
                      "best_decode_tok_s": round(best, 1)}))
    print("text:", repr(tok.decode(gen)[:200]))


if __name__ == "__main__":
    main()
