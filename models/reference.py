"""Float64 numpy reference forward pass of a llama-architecture GGUF weight set.

Independent of the ONNX graph code: weights are dequantized with gguf.quants.dequantize and used
in llama.cpp's own layout (Q/K rows left permuted, rotary applied to adjacent pairs (2i, 2i+1) as
ggml's "normal" rope mode does), so that the converter's un-permutation is checked too.

    from reference import load_reference, forward
    ref = load_reference(weight_set)          # or load_reference_gguf(path)
    logits, hidden = forward(ref, token_ids)  # [seq, vocab], [seq, hidden], float64
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize


class Reference:
    def __init__(self, config: dict, weights: dict):
        self.cfg = config
        self.w = weights


def _deq(qt, raw) -> np.ndarray:
    if qt == QT.F32:
        return np.asarray(raw, dtype=np.float64)
    return dequantize(raw, qt).astype(np.float64)


def load_reference(ws) -> Reference:
    """ws: an object with .config (dict) and .tensors (name -> (GGMLQuantizationType, raw))."""
    w = {name: _deq(qt, raw) for name, (qt, raw) in ws.tensors.items()}
    return Reference(dict(ws.config), w)


def load_reference_gguf(path: str) -> Reference:
    from gguf import GGUFReader

    r = GGUFReader(path)

    def fv(k, default=None):
        f = r.fields.get(k)
        return default if f is None else f.contents()

    n_head = int(fv("llama.attention.head_count"))
    hidden = int(fv("llama.embedding_length"))
    cfg = {
        "num_hidden_layers": int(fv("llama.block_count")),
        "hidden_size": hidden,
        "intermediate_size": int(fv("llama.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(fv("llama.attention.head_count_kv", n_head)),
        "head_size": int(fv("llama.rope.dimension_count", hidden // n_head)),
        "rope_theta": float(fv("llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(fv("llama.attention.layer_norm_rms_epsilon")),
    }
    w = {}
    for t in r.tensors:
        qt = QT(int(t.tensor_type))
        w[t.name] = _deq(qt, np.array(t.data))
    return Reference(cfg, w)


def _rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def _rope_adjacent(x, pos, theta):
    """x [heads, seq, hd]; rotate pairs (2i, 2i+1) by pos * theta^(-2i/hd) (ggml rope mode 0)."""
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # [seq, hd/2]
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def forward(ref: Reference, ids) -> tuple[np.ndarray, np.ndarray]:
    """Full causal forward of one sequence. Returns (logits [S, V], hidden [S, H]) in float64."""
    cfg, w = ref.cfg, ref.w
    ids = np.asarray(ids, dtype=np.int64)
    S = ids.shape[0]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_size"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    emb = w["token_embd.weight"]  # [V, H]
    x = emb[ids]
    pos = np.arange(S)
    mask = np.triu(np.full((S, S), -np.inf), k=1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"blk.{i}."
        h = _rmsnorm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(S, nh, hd).transpose(1, 0, 2)
        k = (h @ w[p + "attn_k.weight"].T).reshape(S, nkv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "attn_v.weight"].T).reshape(S, nkv, hd).transpose(1, 0, 2)
        q = _rope_adjacent(q, pos, theta)
        k = _rope_adjacent(k, pos, theta)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=0)
        v = np.repeat(v, rep, axis=0)
        att = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(S, nh * hd)
        x = x + o @ w[p + "attn_output.weight"].T
        h = _rmsnorm(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    hidden = _rmsnorm(x, w["output_norm.weight"], eps)
    head = w["output.weight"] if "output.weight" in w else emb
    return hidden @ head.T, hidden
