#!/usr/bin/env python3
"""Convert a llama-architecture GGUF (Q4_1 blocks + Q8_0 tied embedding, e.g. SmolLM2-135M-Instruct)
into an onnxruntime-genai style model folder, carrying the quantized weights over exactly.

    python models/convert.py GGUF OUTDIR [--profile fast|exact] [--accuracy-level 1|4|4s|0]
                                         [--accuracy-levels SPEC] [--zp-mode int|float]

Output folder: genai_config.json, model.onnx (+ model.onnx.data), tokenizer.json,
tokenizer_config.json, attune_model.json (converter version, profile, accuracy levels, config).

Profiles (--profile, recorded in attune_model.json as "profile"):
  fast  (default): int8 compute (MatMulNBits accuracy_level 4) in the 4-bit projections of every
        layer but the first (fp32 there) and a single int8 pass in the 8-bit LM head, the same
        kind of approximation as llama.cpp's Q4_1 x Q8_1 dot products; models/test_accuracy.py
        checks that its mean KL to the float64 reference is at most llama.cpp's and its top-1
        agreement at least llama.cpp's.
  exact: fp32 compute in the 4-bit projections (reproduces the dequantized GGUF to ~3e-6) and the
        LM head in two exact int8 passes; ~1.4x slower decode.
--accuracy-level / --accuracy-levels override a profile's levels; the folder then records
profile "custom".

Graph contract (relied upon by the Rust engine):
  inputs : input_ids int64 [batch, seq]; attention_mask int64 [batch, total_seq];
           past_key_values.{i}.key / .value float32 [batch, kv_heads, past_seq, head_dim];
           logits_to_keep int64 [1], optional (default 0 = every position; n > 0: the last n)
  outputs: logits float32 [batch, kept, vocab]; hidden_states float32 [batch, kept, hidden]
           (final RMSNorm output = LM head input); present.{i}.key / .value float32
           [batch, kv_heads, total_seq, head_dim]
No position_ids input: GroupQueryAttention derives positions from the attention mask
(seqlens_k = sum(mask) - 1, total_sequence_length = mask.shape[1], as genai's builder does); past
and present may share one max-length buffer (GQA share-buffer mode).

Weight mapping (no re-quantization):
  Q4_1 block (32 weights, fp16 d, fp16 m, w = d*q + m) -> com.microsoft MatMulNBits (bits 4,
  block 32): nibbles repacked to ORT's order, scale = d, and the min as an integer zero point
  z = clamp(round(-m/d), 0, 15) plus an in-graph correction (per-block sums of the input times the
  [blocks x N] residual m + d*z, one Gemm; --zp-mode int, default), or as a float zero point
  (zp = -m/d, --zp-mode float: exact too, but ORT's CPU kernel then dequantizes the whole matrix
  on every call, ~25x slower). Q/K rows are un-permuted (llama.cpp's interleaved rotary layout ->
  rotate-half); Q/K/V and gate/up are fused into one MatMulNBits each.
  Q8_0 block (fp16 d, int8 q[32]) -> 8-bit MatMulNBits (LM head, default zero point 128) and
  GatherBlockQuantized (embedding); both read the same uint8 initializer (q + 128).

The same code path builds the tiny test model (models/make_tiny.py) from an in-memory weight set.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gguf import GGMLQuantizationType as QT

QK = 32  # block size of Q4_1 and Q8_0
CONVERTER_VERSION = "2"
MATMUL_KINDS = ("qkv", "o", "gate_up", "down", "lm_head")
# MatMulNBits accuracy_level of the 4-bit projections. 1 (fp32 compute) reproduces the GGUF to
# ~3e-6; 4 (int8 compute on activations quantized per 32-block, as llama.cpp's Q8_1) has a
# hidden-state error ~4e-2 and llama.cpp's KL to the reference. "4s" = int8 compute on an
# activation split into an int8-exact part and a remainder (two int8 passes, error ~1e-4, slower).
EXACT_ACCURACY_LEVEL = 1
# The 8-bit LM head only has a fast kernel at accuracy_level 4 (levels 0/1 dequantize the whole
# 49152 x 576 matrix on every call: ~50x slower); the exact profile runs it in two exact int8
# passes ("4s"), the fast one in a single pass.
EXACT_LM_HEAD_LEVEL = "4s"
ACCURACY_CHOICES = ("0", "1", "2", "3", "4", "4s")
# Named sets of accuracy levels (see the module doc): the base level of the 4-bit projections and
# per-kind overrides.
# fast: layer 0's four projections stay at fp32 compute (1/30 of the 4-bit work): the int8 error
# made there travels through every later layer. Measured on models/accuracy.py's texts (387
# tokens) against llama.cpp's 3.65e-3 / 97.9 %: all level 4, mean KL 3.87e-3 / top-1 97.7 % (fails);
# layer 0 at level 1, 3.15e-3 / 98.4 % (KV-cache path 3.09e-3 / 98.2 %).
PROFILES = {
    "fast": (4, {"lm_head": 4, "qkv@0": 1, "o@0": 1, "gate_up@0": 1, "down@0": 1}),
    "exact": (EXACT_ACCURACY_LEVEL, {"lm_head": EXACT_LM_HEAD_LEVEL}),
}
DEFAULT_PROFILE = "fast"


def profile_levels(profile: str, accuracy_level=None, levels: dict | None = None) -> dict:
    """The per-kind accuracy levels of a profile, with an optional base level and overrides."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} not in {sorted(PROFILES)}")
    base, over = PROFILES[profile]
    acc = base if accuracy_level is None else accuracy_level
    if str(acc) not in ACCURACY_CHOICES:
        raise ValueError(f"accuracy_level {acc!r} not in {ACCURACY_CHOICES}")
    acc = acc if str(acc).endswith("s") else int(acc)
    out = {k: acc for k in MATMUL_KINDS}
    out.update(over)
    out.update(levels or {})
    return out


def profile_name(levels: dict) -> str:
    """The profile whose levels these are, or "custom"."""
    for name in PROFILES:
        if profile_levels(name) == levels:
            return name
    return "custom"


def parse_levels(spec: str | None) -> dict:
    """'qkv=4s,down=1,o@0-3=1' -> {'qkv': '4s', 'down': 1, 'o@0': 1, ..., 'o@3': 1}.

    KIND=N sets MatMulNBits accuracy_level N; a trailing 's' (4s) also splits the activation into
    an int8-exact part and a remainder (two int8 passes, near-fp32 accuracy). KIND@A-B limits the
    setting to layers A..B.
    """
    out = {}
    for part in filter(None, (spec or "").replace(" ", "").split(",")):
        k, _, v = part.partition("=")
        kind, _, layers = k.partition("@")
        if kind not in MATMUL_KINDS or v.rstrip("s") not in ("0", "1", "2", "3", "4"):
            raise ValueError(f"bad accuracy level entry {part!r} (kinds: {', '.join(MATMUL_KINDS)})")
        val = v if v.endswith("s") else int(v)
        if layers:
            a, _, b = layers.partition("-")
            for i in range(int(a), int(b or a) + 1):
                out[f"{kind}@{i}"] = val
        else:
            out[kind] = val
    return out


# --------------------------------------------------------------------------------------------
# GGUF-like weight set
# --------------------------------------------------------------------------------------------
@dataclass
class WeightSet:
    """What a GGUF holds, in the GGUF's own terms.

    tensors: name -> (GGMLQuantizationType, raw ndarray). For quantized types the raw array is
    uint8 [rows, bytes_per_row] (rows = output features), for F32 a float32 array of the
    tensor's shape (rows first). Q and K rows are in llama.cpp's permuted order.
    """

    config: dict
    tensors: dict
    tokenizer: dict = field(default_factory=dict)  # tokens, token_types, merges, chat_template, ids


def load_gguf(path: str) -> WeightSet:
    from gguf import GGUFReader

    r = GGUFReader(path)

    def field_value(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        return f.contents()

    arch = field_value("general.architecture")
    if arch != "llama":
        raise SystemExit(f"unsupported architecture {arch!r} (only llama)")
    p = "llama."
    n_head = int(field_value(p + "attention.head_count"))
    hidden = int(field_value(p + "embedding_length"))
    cfg = {
        "num_hidden_layers": int(field_value(p + "block_count")),
        "hidden_size": hidden,
        "intermediate_size": int(field_value(p + "feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(field_value(p + "attention.head_count_kv", n_head)),
        "head_size": int(field_value(p + "rope.dimension_count", hidden // n_head)),
        "rope_theta": float(field_value(p + "rope.freq_base", 10000.0)),
        "rms_norm_eps": float(field_value(p + "attention.layer_norm_rms_epsilon")),
        "context_length": int(field_value(p + "context_length")),
    }
    tensors = {}
    for t in r.tensors:
        qt = QT(int(t.tensor_type))
        data = np.array(t.data)  # copy out of the memmap
        tensors[t.name] = (qt, data)
    tok = {
        "model": field_value("tokenizer.ggml.model"),
        "pre": field_value("tokenizer.ggml.pre"),
        "tokens": list(field_value("tokenizer.ggml.tokens")),
        "token_types": [int(x) for x in field_value("tokenizer.ggml.token_type")],
        "merges": list(field_value("tokenizer.ggml.merges")),
        "bos_token_id": int(field_value("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field_value("tokenizer.ggml.eos_token_id")),
        "unk_token_id": int(field_value("tokenizer.ggml.unknown_token_id", 0)),
        "pad_token_id": int(field_value("tokenizer.ggml.padding_token_id",
                                        field_value("tokenizer.ggml.eos_token_id"))),
        "add_bos_token": bool(field_value("tokenizer.ggml.add_bos_token", False)),
        "chat_template": field_value("tokenizer.chat_template"),
    }
    emb_qt, emb = tensors["token_embd.weight"]
    cfg["vocab_size"] = int(emb.shape[0])
    if len(tok["tokens"]) != cfg["vocab_size"]:
        raise SystemExit("tokenizer size != embedding rows")
    return WeightSet(cfg, tensors, tok)


# --------------------------------------------------------------------------------------------
# Block formats
# --------------------------------------------------------------------------------------------
def q4_1_fields(raw: np.ndarray):
    """uint8 [rows, nb*20] -> (d fp32 [rows, nb], m fp32 [rows, nb], q uint8 [rows, nb, 32])."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, 20)
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = b[..., 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element j: low nibble of qs[j], j+16: high
    return d, m, q


def q8_0_fields(raw: np.ndarray):
    """uint8 [rows, nb*34] -> (d fp32 [rows, nb], q int8 [rows, nb, 32])."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, 34)
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = b[..., 2:34].copy().view(np.int8)
    return d, q


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """[..., 32] values 0..15 -> [..., 16] bytes, ORT order: element 2i low nibble, 2i+1 high."""
    q = q.astype(np.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def unpermute_rows(raw: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved rotary -> rotate-half).

    llama.cpp: w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2).reshape(w.shape)
    """
    rows = raw.shape[0]
    hd = rows // n_head
    return raw.reshape(n_head, hd // 2, 2, *raw.shape[1:]).swapaxes(1, 2).reshape(raw.shape)


# --------------------------------------------------------------------------------------------
# Graph builder
# --------------------------------------------------------------------------------------------
class Graph:
    def __init__(self):
        self.nodes = []
        self.inits = []
        self.names = set()
        self.consts = {}

    def init(self, name, arr):
        assert name not in self.names, name
        self.names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const_i64(self, values, scalar=False):
        key = ("i64", tuple(values), scalar)
        if key not in self.consts:
            arr = np.array(values[0] if scalar else values, dtype=np.int64)
            name = f"const_i64_{len(self.consts)}"
            self.consts[key] = self.init(name, arr)
        return self.consts[key]

    def const_f32(self, value):
        key = ("f32", float(value))
        if key not in self.consts:
            self.consts[key] = self.init(f"const_f32_{len(self.consts)}", np.array(value, np.float32))
        return self.consts[key]

    def node(self, op, inputs, outputs, name, domain=None, **attrs):
        n = helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs)
        self.nodes.append(n)
        return outputs[0] if len(outputs) == 1 else outputs


class Converter:
    def __init__(self, ws: WeightSet, accuracy_level=None, zp_mode: str = "int",
                 levels: dict | None = None, profile: str = DEFAULT_PROFILE):
        self.ws = ws
        self.cfg = ws.config
        self.levels = profile_levels(profile, accuracy_level, levels)
        if zp_mode not in ("int", "float"):
            raise ValueError(zp_mode)
        self.zp_mode = zp_mode
        self.g = Graph()

    # ---- weights --------------------------------------------------------------------------
    def tensor(self, name):
        return self.ws.tensors[name]

    def q4_1_rows(self, name, unpermute_heads=None):
        qt, raw = self.tensor(name)
        if qt != QT.Q4_1:
            raise SystemExit(f"{name}: expected Q4_1, got {qt.name}")
        if unpermute_heads:
            raw = unpermute_rows(raw, unpermute_heads)
        return raw

    def level(self, kind, layer):
        """(accuracy_level, split) for one projection: most specific setting wins."""
        spec = self.levels.get(f"{kind}@{layer}", self.levels[kind])
        if isinstance(spec, str):
            return int(spec.rstrip("s")), spec.endswith("s")
        return int(spec), False

    def split_activation(self, x, K, name):
        """x = xq + r with xq exactly on the int8 grid MatMulNBits' int8 compute uses
        (per 32-block, scale amax/127), so that int8 compute of xq is lossless and r (about 1/254
        of x) carries the rest: W.x = W.xq + W.r to ~1e-5 relative, at int8 speed."""
        g = self.g
        nb = K // QK
        xb = g.node("Reshape", [x, g.const_i64([0, nb, QK])], [f"{name}.xb"], f"{name}.xb_reshape")
        ab = g.node("Abs", [xb], [f"{name}.xabs"], f"{name}.xabs")
        am = g.node("ReduceMax", [ab, g.const_i64([-1])], [f"{name}.xamax"], f"{name}.xamax",
                    keepdims=0)
        # an all-zero block gets scale 0: QuantizeLinear's value is then irrelevant, since
        # DequantizeLinear multiplies it by 0 (xq = 0, r = x = 0), so no guard is needed
        sc = g.node("Mul", [am, self.g.const_f32(1.0 / 127.0)], [f"{name}.xscale"], f"{name}.xscale")
        q8 = g.node("QuantizeLinear", [x, sc], [f"{name}.xq8"], f"{name}.xq8", axis=-1,
                    block_size=QK, output_dtype=TensorProto.INT8)
        xq = g.node("DequantizeLinear", [q8, sc], [f"{name}.xq"], f"{name}.xq", axis=-1,
                    block_size=QK)
        r = g.node("Sub", [x, xq], [f"{name}.xr"], f"{name}.xr")
        return xq, r, xb

    def matmul_q4_1(self, x, raw, K, name, kind, layer):
        """x [tokens, K] @ W^T where W = raw Q4_1 rows [N, K]. Returns output name [tokens, N].

        Tensors are kept 2-D (tokens x features) so that the min correction is one Gemm
        (block sums @ residual + MatMulNBits output), cheaper than 3-D MatMul + Add."""
        g = self.g
        N = raw.shape[0]
        nb = K // QK
        acc, split = self.level(kind, layer)
        d, m, q = q4_1_fields(raw)
        g.init(f"{name}.qweight", pack_nibbles(q))  # [N, nb, 16]
        g.init(f"{name}.scales", d.reshape(-1))       # [N*nb]
        attrs = dict(domain="com.microsoft", K=K, N=N, bits=4, block_size=QK, accuracy_level=acc)
        if self.zp_mode == "float":
            with np.errstate(divide="ignore", invalid="ignore"):
                zp = np.where(d != 0, -m / np.where(d != 0, d, 1), 0).astype(np.float32)
            g.init(f"{name}.zp", zp.reshape(-1))
            return g.node("MatMulNBits", [x, f"{name}.qweight", f"{name}.scales", f"{name}.zp"],
                          [f"{name}.out"], name, **attrs)
        # integer zero point + correction
        with np.errstate(divide="ignore", invalid="ignore"):
            zf = np.where(d != 0, -m.astype(np.float64) / np.where(d != 0, d, 1), 0)
        z = np.clip(np.rint(zf), 0, 15).astype(np.uint8)                         # [N, nb]
        resid = (m.astype(np.float64) + d.astype(np.float64) * z).astype(np.float32)  # [N, nb]
        zb = z if nb % 2 == 0 else np.concatenate([z, np.zeros((N, 1), np.uint8)], axis=1)
        zpk = (zb[:, 0::2] | (zb[:, 1::2] << 4)).astype(np.uint8)                # [N, ceil(nb/2)]
        g.init(f"{name}.zp", zpk.reshape(-1))
        w = [f"{name}.qweight", f"{name}.scales", f"{name}.zp"]
        xb = None
        if split:
            xq, r, xb = self.split_activation(x, K, name)
            ys = [g.node("MatMulNBits", [xq] + w, [f"{name}.mnb_q"], name + ".q", **attrs),
                  g.node("MatMulNBits", [r] + w, [f"{name}.mnb_r"], name + ".r", **attrs)]
        else:
            ys = [g.node("MatMulNBits", [x] + w, [f"{name}.mnb"], name, **attrs)]
        y = ys[0] if len(ys) == 1 else g.node("Add", ys, [f"{name}.mnb"], f"{name}.add")
        if not np.any(resid):
            return y
        g.init(f"{name}.resid", np.ascontiguousarray(resid.T))  # [nb, N]
        if xb is None:
            xb = g.node("Reshape", [x, g.const_i64([0, nb, QK])], [f"{name}.xb"],
                        f"{name}.xb_reshape")
        s = g.node("ReduceSum", [xb, g.const_i64([-1])], [f"{name}.bsum"], f"{name}.bsum",
                   keepdims=0)                                              # [tokens, nb]
        return g.node("Gemm", [s, f"{name}.resid", y], [f"{name}.out"], f"{name}.corr_gemm")

    # ---- model ----------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        g, cfg = self.g, self.cfg
        L = cfg["num_hidden_layers"]
        H = cfg["hidden_size"]
        nh = cfg["num_attention_heads"]
        nkv = cfg["num_key_value_heads"]
        hd = cfg["head_size"]
        V = cfg["vocab_size"]
        ff = cfg["intermediate_size"]
        eps = cfg["rms_norm_eps"]
        ctx = cfg["context_length"]
        assert nh * hd == H, "hidden != heads * head_dim not supported"
        assert H % QK == 0 and ff % QK == 0

        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        ]
        outputs = [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", V]),
            helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["batch_size", "sequence_length", H]),
        ]
        # Optional input: a graph input with an initializer of the same name defaults to it.
        inputs.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, [1]))
        g.init("logits_to_keep", np.zeros(1, dtype=np.int64))
        for i in range(L):
            for kv in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                    ["batch_size", nkv, "past_sequence_length", hd]))
                outputs.append(helper.make_tensor_value_info(
                    f"present.{i}.{kv}", TensorProto.FLOAT,
                    ["batch_size", nkv, "total_sequence_length", hd]))

        # ---- embedding / LM head: shared Q8_0 bytes ----
        qt, raw = self.tensor("token_embd.weight")
        if qt != QT.Q8_0:
            raise SystemExit(f"token_embd.weight: expected Q8_0, got {qt.name}")
        if "output.weight" in self.ws.tensors:
            raise SystemExit("untied output.weight not supported")
        d8, q8 = q8_0_fields(raw)
        nb_h = H // QK
        g.init("embed.qweight", (q8.view(np.uint8) ^ 0x80).reshape(V, nb_h, QK))  # q + 128
        g.init("lm_head.scales", d8.reshape(-1))               # [V*nb]
        g.init("embed.scales", d8.reshape(V, nb_h, 1))
        emb = g.node("GatherBlockQuantized", ["embed.qweight", "input_ids", "embed.scales"],
                     ["embed.gbq"], "embed.gather", domain="com.microsoft",
                     gather_axis=0, quantize_axis=2, block_size=QK, bits=8)
        # [b, s, nb, 32] -> [b*s, H]: token-major 2-D tensors everywhere but in attention
        x = g.node("Reshape", [emb, g.const_i64([-1, H])], ["embed.out"], "embed.reshape")
        ids_shape = g.node("Shape", ["input_ids"], ["ids.shape"], "ids.shape")
        bs_shape = g.node("Concat", [ids_shape, g.const_i64([-1])], ["ids.shape3"], "ids.shape3",
                          axis=0)                                           # [b, s, -1]

        # ---- attention mask -> GQA lengths ----
        ms = g.node("ReduceSum", ["attention_mask", g.const_i64([1])], ["mask.sum"], "mask.reducesum",
                    keepdims=0)
        ms1 = g.node("Sub", [ms, g.const_i64([1], scalar=True)], ["mask.sum_m1"], "mask.sub")
        seqlens_k = g.node("Cast", [ms1], ["seqlens_k"], "mask.seqlens_cast", to=TensorProto.INT32)
        shp = g.node("Shape", ["attention_mask"], ["mask.shape"], "mask.shape")
        tot = g.node("Gather", [shp, g.const_i64([1], scalar=True)], ["mask.total"], "mask.gather", axis=0)
        total_len = g.node("Cast", [tot], ["total_seq_len"], "mask.total_cast", to=TensorProto.INT32)

        # ---- rotary caches (rotate-half, positions 0..ctx-1) ----
        inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        ang = np.arange(ctx, dtype=np.float64)[:, None] * inv_freq[None, :]
        g.init("cos_cache", np.cos(ang).astype(np.float32))
        g.init("sin_cache", np.sin(ang).astype(np.float32))

        residual = x
        normed = None
        mlp_out = None
        for i in range(L):
            p = f"blk.{i}"
            g.init(f"{p}.attn_norm", self.tensor(f"{p}.attn_norm.weight")[1].astype(np.float32))
            g.init(f"{p}.ffn_norm", self.tensor(f"{p}.ffn_norm.weight")[1].astype(np.float32))
            if i == 0:
                normed = g.node("SimplifiedLayerNormalization", [x, f"{p}.attn_norm"],
                                [f"{p}.attn_norm.out"], f"{p}.attn_norm", axis=-1, epsilon=eps,
                                stash_type=1)
            else:
                normed, _, _, residual = g.node(
                    "SkipSimplifiedLayerNormalization", [mlp_out, residual, f"{p}.attn_norm"],
                    [f"{p}.attn_norm.out", "", "", f"{p}.attn_in"], f"{p}.attn_norm",
                    domain="com.microsoft", epsilon=eps)
            # fused QKV
            wq = self.q4_1_rows(f"{p}.attn_q.weight", nh)
            wk = self.q4_1_rows(f"{p}.attn_k.weight", nkv)
            wv = self.q4_1_rows(f"{p}.attn_v.weight")
            qkv = self.matmul_q4_1(normed, np.concatenate([wq, wk, wv], axis=0), H, f"{p}.attn_qkv", "qkv", i)
            qkv = g.node("Reshape", [qkv, bs_shape], [f"{p}.attn_qkv.3d"], f"{p}.attn_qkv.reshape")
            attn, pk, pv = g.node(
                "GroupQueryAttention",
                [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                 seqlens_k, total_len, "cos_cache", "sin_cache"],
                [f"{p}.attn.out", f"present.{i}.key", f"present.{i}.value"], f"{p}.attn",
                domain="com.microsoft", num_heads=nh, kv_num_heads=nkv, do_rotary=1,
                rotary_interleaved=0, scale=float(1.0 / np.sqrt(hd)), local_window_size=-1)
            attn = g.node("Reshape", [attn, g.const_i64([-1, H])], [f"{p}.attn.2d"],
                          f"{p}.attn.reshape")
            o = self.matmul_q4_1(attn, self.q4_1_rows(f"{p}.attn_output.weight"), H, f"{p}.attn_output", "o", i)
            normed, _, _, residual = g.node(
                "SkipSimplifiedLayerNormalization", [o, residual, f"{p}.ffn_norm"],
                [f"{p}.ffn_norm.out", "", "", f"{p}.ffn_in"], f"{p}.ffn_norm",
                domain="com.microsoft", epsilon=eps)
            # fused gate/up
            wg = self.q4_1_rows(f"{p}.ffn_gate.weight")
            wu = self.q4_1_rows(f"{p}.ffn_up.weight")
            gu = self.matmul_q4_1(normed, np.concatenate([wg, wu], axis=0), H, f"{p}.ffn_gate_up", "gate_up", i)
            gate, up = g.node("Split", [gu, g.const_i64([ff, ff])], [f"{p}.gate", f"{p}.up"],
                              f"{p}.ffn_split", axis=-1)
            sg = g.node("Sigmoid", [gate], [f"{p}.gate_sig"], f"{p}.ffn_sigmoid")
            silu = g.node("Mul", [gate, sg], [f"{p}.gate_silu"], f"{p}.ffn_silu")
            act = g.node("Mul", [silu, up], [f"{p}.ffn_act"], f"{p}.ffn_mul")
            mlp_out = self.matmul_q4_1(act, self.q4_1_rows(f"{p}.ffn_down.weight"), ff, f"{p}.ffn_down", "down", i)

        g.init("output_norm", self.tensor("output_norm.weight")[1].astype(np.float32))
        hid = g.node("SkipSimplifiedLayerNormalization", [mlp_out, residual, "output_norm"],
                     ["hidden_states.2d"], "output_norm", domain="com.microsoft", epsilon=eps)
        # Only the last `logits_to_keep` positions reach the LM head (0, the default: all of them),
        # so that a prompt's prefill does not pay for V-wide logits it never reads.
        hid3 = g.node("Reshape", [hid, bs_shape], ["hidden_states.all"], "hidden_states.reshape")
        start = g.node("Neg", ["logits_to_keep"], ["keep.start"], "keep.neg")
        g.node("Slice", [hid3, start, g.const_i64([2**62]), g.const_i64([1])], ["hidden_states"],
               "keep.slice")
        hid = g.node("Reshape", ["hidden_states", g.const_i64([-1, H])], ["hidden_states.kept"],
                     "keep.reshape")
        batch = g.node("Slice", [ids_shape, g.const_i64([0]), g.const_i64([1])], ["ids.batch"],
                       "ids.batch")
        kept_shape = g.node("Concat", [batch, g.const_i64([-1, V])], ["logits.shape"], "logits.shape",
                            axis=0)                                          # [b, -1, V]
        lm_acc, lm_split = self.level("lm_head", None)
        lm_attrs = dict(domain="com.microsoft", K=H, N=V, bits=8, block_size=QK, accuracy_level=lm_acc)
        lm_w = ["embed.qweight", "lm_head.scales"]
        if lm_split:
            # int8 compute on an exactly split activation: two passes, near-fp32 logits.
            hq, hr, _ = self.split_activation(hid, H, "lm_head")
            lq = g.node("MatMulNBits", [hq] + lm_w, ["lm_head.out_q"], "lm_head.q", **lm_attrs)
            lr = g.node("MatMulNBits", [hr] + lm_w, ["lm_head.out_r"], "lm_head.r", **lm_attrs)
            lg = g.node("Add", [lq, lr], ["logits.2d"], "lm_head.add")
        else:
            lg = g.node("MatMulNBits", [hid] + lm_w, ["logits.2d"], "lm_head", **lm_attrs)
        g.node("Reshape", [lg, kept_shape], ["logits"], "logits.reshape")

        graph = helper.make_graph(g.nodes, "attune_llama", inputs, outputs, initializer=g.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
            producer_name="attune-convert", producer_version=CONVERTER_VERSION)
        model.ir_version = 10
        return model


# --------------------------------------------------------------------------------------------
# Tokenizer files
# --------------------------------------------------------------------------------------------
def build_tokenizer_json(tok: dict) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if tok.get("model") != "gpt2":
        raise SystemExit(f"unsupported tokenizer model {tok.get('model')!r}")
    tokens = tok["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in tok["merges"]]
    for mg in merges:
        if len(mg) != 2:
            raise SystemExit(f"bad merge {mg!r}")
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    t = Tokenizer(bpe)
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    # control tokens (GGUF token_type 3) -> special added tokens
    types = tok["token_types"]
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i in range(len(tokens)) if types[i] == 3]
    t.add_special_tokens(specials)
    return t.to_str(pretty=True)


def build_tokenizer_config(tok: dict, context_length: int) -> dict:
    tokens, types = tok["tokens"], tok["token_types"]
    added = {str(i): {"content": tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for i in range(len(tokens)) if types[i] == 3}
    cfg = {
        "add_bos_token": bool(tok.get("add_bos_token", False)),
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [tokens[1], tokens[2]] if len(tokens) > 2 else [],
        "bos_token": tokens[tok["bos_token_id"]],
        "clean_up_tokenization_spaces": False,
        "eos_token": tokens[tok["eos_token_id"]],
        "model_max_length": int(context_length),
        "pad_token": tokens[tok["pad_token_id"]],
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": tokens[tok["unk_token_id"]],
        "vocab_size": len(tokens),
    }
    if tok.get("chat_template"):
        cfg["chat_template"] = tok["chat_template"]
    return cfg


def build_genai_config(cfg: dict, tok: dict) -> dict:
    return {
        "model": {
            "bos_token_id": tok["bos_token_id"],
            "context_length": cfg["context_length"],
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": cfg["head_size"],
                "hidden_size": cfg["hidden_size"],
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg["num_attention_heads"],
                "num_hidden_layers": cfg["num_hidden_layers"],
                "num_key_value_heads": cfg["num_key_value_heads"],
            },
            "eos_token_id": tok["eos_token_id"],
            "pad_token_id": tok["pad_token_id"],
            "type": "llama",
            "vocab_size": cfg["vocab_size"],
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": cfg["context_length"],
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


# --------------------------------------------------------------------------------------------
# Folder writing
# --------------------------------------------------------------------------------------------
def write_folder(ws: WeightSet, outdir: str, accuracy_level=None, zp_mode: str = "int",
                 levels: dict | None = None, extra_meta: dict | None = None,
                 profile: str = DEFAULT_PROFILE):
    """Build everything into a temp dir beside outdir, then swap it in atomically.

    profile names the base levels (PROFILES); accuracy_level and levels override them."""
    outdir = os.path.abspath(outdir.rstrip("/"))
    parent = os.path.dirname(outdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(outdir)}.tmp-", dir=parent)
    try:
        conv = Converter(ws, accuracy_level, zp_mode, levels, profile)
        model = conv.build()
        onnx.save_model(model, os.path.join(tmp, "model.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="model.onnx.data",
                        size_threshold=1024, convert_attribute=False)
        tok = ws.tokenizer if ws.tokenizer.get("tokens") else None
        ids = tok or {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
        with open(os.path.join(tmp, "genai_config.json"), "w") as f:
            json.dump(build_genai_config(ws.config, ids), f, indent=4)
            f.write("\n")
        if tok:
            with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
                f.write(build_tokenizer_json(tok))
            with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(build_tokenizer_config(tok, ws.config["context_length"]), f,
                          indent=2, ensure_ascii=False)
                f.write("\n")
        meta = {"converter_version": CONVERTER_VERSION, "accuracy_levels": conv.levels,
                "profile": profile_name(conv.levels), "zp_mode": zp_mode, "config": ws.config}
        if extra_meta:
            meta.update(extra_meta)
        with open(os.path.join(tmp, "attune_model.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.exists(outdir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(outdir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(outdir, old)
        os.rename(tmp, outdir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("outdir")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                    help="fast (default): int8 compute everywhere, at llama.cpp's accuracy; "
                         "exact: fp32 compute in the 4-bit projections (see the module doc)")
    ap.add_argument("--accuracy-level", default=None, choices=ACCURACY_CHOICES,
                    help="override the profile's MatMulNBits accuracy_level of the 4-bit "
                         "projections: 1 = fp32 compute (exact to ~3e-6), 4 = int8 compute "
                         "(hidden-state error ~4e-2), 4s = int8 compute on an exactly split "
                         "activation (error ~1e-4, slower)")
    ap.add_argument("--accuracy-levels", default=None,
                    help="per-projection overrides, e.g. 'down=1,lm_head=4' "
                         f"(kinds: {', '.join(MATMUL_KINDS)})")
    ap.add_argument("--zp-mode", choices=["int", "float"], default="int",
                    help="how Q4_1's min is expressed (see module doc)")
    a = ap.parse_args(argv)
    t0 = time.time()
    ws = load_gguf(a.gguf)
    out = write_folder(ws, a.outdir, a.accuracy_level, a.zp_mode, parse_levels(a.accuracy_levels),
                       extra_meta={"source": os.path.basename(a.gguf)}, profile=a.profile)
    print(f"wrote {out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
