"""Accuracy of each converter profile against llama.cpp's on the same GGUF (slow tier; `make test`
runs it: .venv/bin/python -m pytest -q models/test_accuracy.py).

Mean KL per token and top-1 agreement to the float64 numpy forward pass of the dequantized GGUF
(reference.py), teacher-forced on accuracy.CHATS (twelve chat texts, 1,500 tokens or more), for
llama.cpp (llama-cpp-python, installed by `make setup-test` from models/requirements-accuracy.txt,
run in a child process), the fast folder (models/smollm2-135m-instruct-fast) and the exact one
(models/smollm2-135m-instruct, the default), each for the full pass and for the KV-cache path
(prefill half, then one token at a time). The criterion is accuracy.verdict: mean KL at most
llama.cpp's in the same run, and top-1 not worse than llama.cpp's at one-sided McNemar p <
accuracy.TOP1_ALPHA (a difference of a few tokens, which changes from one machine to another, is
noise). A profile that is really worse, the fast profile with layer 0 at int8 compute too (the
"all-int8" variant, converted here into a temporary folder), is measured in the same run and must
be rejected. Nothing here skips: a missing part fails with the command that makes it.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import accuracy  # noqa: E402
import convert  # noqa: E402

FOLDERS = {"attune fast": os.environ.get("ATTUNE_FAST_MODEL") or os.path.join(HERE, "smollm2-135m-instruct-fast"),
           "attune exact": os.environ.get("ATTUNE_REAL_MODEL") or os.path.join(HERE, "smollm2-135m-instruct")}
PROFILES = {"attune fast": "fast", "attune exact": "exact"}
# The really worse profile: the fast profile without its fp32 layer 0 (every 4-bit projection at
# int8 compute, MatMulNBits accuracy_level 4).
ALL_INT8 = "all-int8 (rejected)"
ALL_INT8_LEVELS = {"qkv@0": 4, "o@0": 4, "gate_up@0": 4, "down@0": 4}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    missing = accuracy.missing_parts(accuracy.GGUF, FOLDERS)
    if missing:
        pytest.fail(missing)
    worse = str(tmp_path_factory.mktemp("all-int8") / "folder")
    convert.write_folder(convert.load_gguf(accuracy.GGUF), worse, levels=ALL_INT8_LEVELS, profile="fast")
    return accuracy.measure(accuracy.GGUF, {**FOLDERS, ALL_INT8: worse}, kv_cache=tuple(FOLDERS))


def test_report(rows, capsys):
    """Prints the table every time; with ATTUNE_ACCURACY_LOG set, also appends the run to that
    JSON-lines file (benches/results/accuracy.jsonl is the committed one)."""
    with capsys.disabled():
        print("\n" + accuracy.table(rows))
    if os.environ.get("ATTUNE_ACCURACY_LOG"):
        accuracy.append_log(os.environ["ATTUNE_ACCURACY_LOG"], rows)


def test_same_texts_for_all(rows):
    """At least 8 texts and 1,500 tokens; llama.cpp's own tokenizer gives the ids fed to everyone."""
    assert len(accuracy.CHATS) >= 8
    assert rows["llama.cpp"]["same_tokenization"]
    assert len({r["tokens"] for r in rows.values()}) == 1 and rows["llama.cpp"]["tokens"] >= 1500
    assert all(len(r["agree"]) == r["tokens"] for r in rows.values())


def test_llama_cpp_is_a_close_but_real_approximation(rows):
    """llama.cpp's logits come from the same weights (close to the reference) and are not the
    reference itself (its int8 activations leave a measurable KL): the bar below means something."""
    r = rows["llama.cpp"]
    assert 1e-4 < r["mean_kl"] < 2e-2 and r["top1"] > 0.9, {k: v for k, v in r.items() if k != "agree"}


@pytest.mark.parametrize("name", ["attune fast", "attune fast, KV-cache path",
                                  "attune exact", "attune exact, KV-cache path"])
def test_profile_at_llama_cpp_accuracy(rows, name):
    ok, reasons = accuracy.verdict(rows[name], rows["llama.cpp"])
    assert ok, f"{name}: " + "; ".join(reasons)


def test_a_really_worse_profile_is_rejected(rows):
    """The all-int8 variant (converted with the same code, layer 0 at int8 compute) is further from
    the reference than the fast profile, and the criterion rejects it against llama.cpp."""
    worse, fast, base = rows[ALL_INT8], rows["attune fast"], rows["llama.cpp"]
    with open(os.path.join(rows[ALL_INT8]["folder"], "attune_model.json")) as f:
        assert {k: v for k, v in json.load(f)["accuracy_levels"].items() if k.endswith("@0")} == ALL_INT8_LEVELS
    assert worse["mean_kl"] > fast["mean_kl"]
    ok, reasons = accuracy.verdict(worse, base)
    assert not ok and reasons, f"the criterion accepted the all-int8 variant: {worse['mean_kl']:.4e} / {worse['top1']:.4f}"


def test_mcnemar_exact_values():
    """McNemar's one-sided exact p against values worked out by hand: b of n discordant tokens going
    to llama.cpp, P(X >= b) for X ~ Binomial(n, 1/2)."""
    def row(agree):
        return {"agree": agree}
    # 5 tokens only llama.cpp gets right, 3 only the other: (C(8,5)+C(8,6)+C(8,7)+C(8,8)) / 2^8.
    llama, other = "11111000" + "1" * 10, "00000111" + "1" * 10
    assert accuracy.mcnemar(row(other), row(llama)) == (5, 3, 93 / 256)
    # 15 against 3: (816 + 153 + 18 + 1) / 2^18 = 0.00377, significant at 0.05.
    llama, other = "1" * 15 + "0" * 3, "0" * 15 + "1" * 3
    b, c, p = accuracy.mcnemar(row(other), row(llama))
    assert (b, c) == (15, 3) and p == pytest.approx(988 / 2 ** 18, rel=1e-12)
    # Better than llama.cpp, or no discordant token at all: nothing to reject.
    # The other way round (3 against 15): P(X >= 3) = 1 - (1 + 18 + 153) / 2^18.
    assert accuracy.mcnemar(row(llama), row(other)) == (3, 15, pytest.approx(1 - 172 / 2 ** 18, rel=1e-12))
    assert accuracy.mcnemar(row("1101"), row("1101")) == (0, 0, 1.0)


def test_verdict_parts():
    """Each part of the criterion alone fails a row, with its numbers in the reason."""
    base = {"mean_kl": 3.0e-3, "agree": "1" * 20 + "0" * 3}
    assert accuracy.verdict({"mean_kl": 2.9e-3, "agree": "1" * 20 + "0" * 3}, base) == (True, [])
    ok, why = accuracy.verdict({"mean_kl": 3.1e-3, "agree": "1" * 20 + "0" * 3}, base)
    assert not ok and len(why) == 1 and "mean KL" in why[0]
    ok, why = accuracy.verdict({"mean_kl": 2.0e-3, "agree": "0" * 15 + "1" * 5 + "1" * 3}, base)
    assert not ok and len(why) == 1 and "McNemar" in why[0]
    # Two tokens lost of 23 (the kind of difference one machine's llama.cpp build makes) is noise.
    assert accuracy.verdict({"mean_kl": 2.9e-3, "agree": "00" + "1" * 18 + "0" * 3}, base)[0]


@pytest.mark.parametrize("name", list(FOLDERS))
def test_folder_records_its_profile(rows, name):
    assert rows[name]["profile"] == PROFILES[name]


def test_exact_profile_is_exact(rows):
    """The exact profile reproduces the reference (fp32 compute: KL ~6e-9, hidden error ~3e-6)."""
    r = rows["attune exact"]
    assert r["mean_kl"] < 1e-6 and r["hidden_rel"] < 1e-5, {k: v for k, v in r.items() if k != "agree"}
