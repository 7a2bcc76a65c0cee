#!/usr/bin/env python3
"""Decode-speed benchmark of converted model folders with plain onnxruntime (batch 1, greedy).

    python models/bench.py MODEL_DIR [MODEL_DIR ...] [--threads 2] [--new 128] [--rounds 3]

Prefills a short chat prompt, then generates --new tokens one at a time. By default the KV cache
stays in place (past and present bound to the same max-length buffers, as onnxruntime-genai and
the Rust engine do); --copy-kv feeds presents back as new pasts instead (a copy per step).
Several folders are measured interleaved (round-robin, --rounds times) and the best round of
each is reported, which keeps comparisons fair on a machine with other load. Besides wall-clock
tok/s it reports tok/s by CPU time of the calling thread, which is robust to other load when
--threads 1 (ORT then computes on the calling thread).
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort

PROMPT = ("<|im_start|>user\nTell me a short story about a robot who learns to paint.<|im_end|>\n"
          "<|im_start|>assistant\n")


class Runner:
    def __init__(self, d, threads):
        dec = json.load(open(os.path.join(d, "genai_config.json")))["model"]["decoder"]
        self.L, self.nkv, self.hd = (dec["num_hidden_layers"], dec["num_key_value_heads"],
                                     dec["head_size"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(os.path.join(d, "model.onnx"), so,
                                         providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t0
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        out_names = [o.name for o in self.sess.get_outputs()]
        self.present_idx = [out_names.index(f"present.{i}.{kv}")
                            for i in range(self.L) for kv in ("key", "value")]
        self.past_names = [f"past_key_values.{i}.{kv}"
                           for i in range(self.L) for kv in ("key", "value")]
        self.present_names = [f"present.{i}.{kv}" for i in range(self.L) for kv in ("key", "value")]
        self.vocab = self.sess.get_outputs()[out_names.index("logits")].shape[2]

    def generate_shared(self, prompt_ids, new):
        """Like generate, but with the KV cache kept in place: past and present are bound to the
        same max-length buffers (GroupQueryAttention's share-buffer mode, as onnxruntime-genai and
        the Rust engine do), so no cache copies per step."""
        max_len = len(prompt_ids) + new + 1
        bufs = [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self.nkv, max_len, self.hd), np.float32))
                for _ in range(2 * self.L)]
        logits = ort.OrtValue.ortvalue_from_shape_and_type([1, 1, self.vocab], np.float32)
        ids, total, gen = prompt_ids, 0, []
        t_start = time.perf_counter()
        for step in range(new + 1):
            total += len(ids)
            io = self.sess.io_binding()
            io.bind_cpu_input("input_ids", np.array([ids], np.int64))
            io.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
            if len(ids) == 1:
                io.bind_ortvalue_output("logits", logits)
            else:
                io.bind_output("logits")  # bound first: get_outputs()[0]
            io.bind_output("hidden_states")
            for name, out, buf in zip(self.past_names, self.present_names, bufs):
                io.bind_ortvalue_input(name, buf)
                io.bind_ortvalue_output(out, buf)
            self.sess.run_with_iobinding(io)
            lg = logits.numpy() if len(ids) == 1 else io.get_outputs()[0].numpy()
            nxt = int(lg[0, -1].argmax())
            ids = [nxt]
            if step == 0:
                t_first, c_first = time.perf_counter(), time.thread_time()
            else:
                gen.append(nxt)
        return (gen, t_first - t_start, new / (time.perf_counter() - t_first),
                new / (time.thread_time() - c_first))

    def generate(self, prompt_ids, new):
        """Returns (generated ids, prefill seconds, decode tok/s wall, decode tok/s thread CPU)."""
        pasts = [np.zeros((1, self.nkv, 0, self.hd), np.float32)] * (2 * self.L)
        ids, total, gen = prompt_ids, 0, []
        t_start = time.perf_counter()
        for step in range(new + 1):
            total += len(ids)
            feed = {"input_ids": np.array([ids], np.int64),
                    "attention_mask": np.ones((1, total), np.int64)}
            feed.update(zip(self.past_names, pasts))
            outs = self.sess.run(None, feed)
            nxt = int(outs[0][0, -1].argmax())
            pasts = [outs[j] for j in self.present_idx]
            ids = [nxt]
            if step == 0:
                t_first, c_first = time.perf_counter(), time.thread_time()
            else:
                gen.append(nxt)
        return (gen, t_first - t_start, new / (time.perf_counter() - t_first),
                new / (time.thread_time() - c_first))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dirs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--copy-kv", action="store_true",
                    help="feed presents back as new pasts (copies per step) instead of keeping the "
                         "KV cache in place in shared max-length buffers")
    a = ap.parse_args()
    runners = {d: Runner(d, a.threads) for d in a.model_dirs}
    best = {d: {"wall": 0.0, "cpu": 0.0, "prefill_s": 1e9} for d in a.model_dirs}
    texts = {}
    for _ in range(a.rounds):
        for d, r in runners.items():
            prompt_ids = r.tok.encode(a.prompt).ids
            gen, pre, wall, cpu = (r.generate if a.copy_kv else r.generate_shared)(prompt_ids, a.new)
            b = best[d]
            b["wall"], b["cpu"], b["prefill_s"] = max(b["wall"], wall), max(b["cpu"], cpu), \
                min(b["prefill_s"], pre)
            texts[d] = r.tok.decode(gen)
    for d in a.model_dirs:
        b = best[d]
        print(json.dumps({"model": d, "threads": a.threads, "new_tokens": a.new,
                          "kv": "copied" if a.copy_kv else "in place",
                          "decode_tok_s_wall": round(b["wall"], 1),
                          "decode_tok_s_cpu": round(b["cpu"], 1),
                          "prefill_s": round(b["prefill_s"], 3),
                          "load_s": round(runners[d].load_s, 3),
                          "text": texts[d][:80]}))

if __name__ == "__main__":
    main()
