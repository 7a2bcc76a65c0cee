"""Accuracy of each converter profile against llama.cpp's on the same GGUF (slow tier; `make test`
runs it: .venv/bin/python -m pytest -q models/test_accuracy.py).

Mean KL per token and top-1 agreement to the float64 numpy forward pass of the dequantized GGUF
(reference.py), teacher-forced on accuracy.CHATS (three chat texts, 387 tokens), for llama.cpp
(llama-cpp-python, installed by `make setup-test` from models/requirements-accuracy.txt), the fast
folder (models/smollm2-135m-instruct-fast) and the exact one
(models/smollm2-135m-instruct, the default), each for the full pass and for the KV-cache path (prefill half,
then one token at a time). A profile passes when its mean KL is at most llama.cpp's and its top-1
at least llama.cpp's, in the same run. Nothing here skips: a missing part fails with the command
that makes it.
"""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import accuracy  # noqa: E402

FOLDERS = {"attune fast": os.environ.get("ATTUNE_FAST_MODEL") or os.path.join(HERE, "smollm2-135m-instruct-fast"),
           "attune exact": os.environ.get("ATTUNE_REAL_MODEL") or os.path.join(HERE, "smollm2-135m-instruct")}
PROFILES = {"attune fast": "fast", "attune exact": "exact"}


@pytest.fixture(scope="module")
def rows():
    if not os.path.exists(accuracy.GGUF):
        pytest.fail(f"real GGUF not found at {accuracy.GGUF} (run: make setup-test)")
    for name, folder in FOLDERS.items():
        if not os.path.exists(os.path.join(folder, "model.onnx")):
            pytest.fail(f"{name} folder not found at {folder} (run: make setup-test)")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.fail("llama-cpp-python is not installed in the venv (run: make setup-test)")
    return accuracy.measure(accuracy.GGUF, FOLDERS, kv_cache=tuple(FOLDERS))


def test_report(rows, capsys):
    with capsys.disabled():
        print("\n" + accuracy.table(rows))


def test_same_texts_for_all(rows):
    """At least 3 texts and 300 tokens; llama.cpp's own tokenizer gives the ids fed to everyone."""
    assert len(accuracy.CHATS) >= 3
    assert rows["llama.cpp"]["same_tokenization"]
    assert len({r["tokens"] for r in rows.values()}) == 1 and rows["llama.cpp"]["tokens"] >= 300


def test_llama_cpp_is_a_close_but_real_approximation(rows):
    """llama.cpp's logits come from the same weights (close to the reference) and are not the
    reference itself (its int8 activations leave a measurable KL): the bar below means something."""
    r = rows["llama.cpp"]
    assert 1e-4 < r["mean_kl"] < 2e-2 and r["top1"] > 0.9, r


@pytest.mark.parametrize("name", ["attune fast", "attune fast, KV-cache path",
                                  "attune exact", "attune exact, KV-cache path"])
def test_profile_at_llama_cpp_accuracy(rows, name):
    r, base = rows[name], rows["llama.cpp"]
    assert r["mean_kl"] <= base["mean_kl"], f"{name}: mean KL {r['mean_kl']:.3e} > llama.cpp's {base['mean_kl']:.3e}"
    assert r["top1"] >= base["top1"], f"{name}: top-1 {r['top1']:.4f} < llama.cpp's {base['top1']:.4f}"


@pytest.mark.parametrize("name", list(FOLDERS))
def test_folder_records_its_profile(rows, name):
    assert rows[name]["profile"] == PROFILES[name]


def test_exact_profile_is_exact(rows):
    """The exact profile reproduces the reference (fp32 compute: KL ~6e-9, hidden error ~3e-6)."""
    r = rows["attune exact"]
    assert r["mean_kl"] < 1e-6 and r["hidden_rel"] < 1e-5, r
