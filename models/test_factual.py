"""Greedy answers to 24 short factual questions (models/factual.py), through the Attune engine
(`attune generate`, greedy) on the fast and the exact folder, next to llama.cpp on the same GGUF and
prompt ids (slow tier; `make test` runs it after the release build). Each answer is checked by a
script; a folder passes when its right answers are not worse than llama.cpp's by McNemar's one-sided
exact test at p < 0.05 (one greedy answer cannot choose a profile; a set of them, against the peer on
the same weights, can). A folder whose answers are broken (the exact folder with its tokenizer's
vocabulary permuted, which keeps the weights but scrambles every prompt) must fail. Nothing skips.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import accuracy  # noqa: E402
import factual  # noqa: E402

FOLDERS = {"attune fast": os.environ.get("ATTUNE_FAST_MODEL") or os.path.join(HERE, "smollm2-135m-instruct-fast"),
           "attune exact": os.environ.get("ATTUNE_REAL_MODEL") or os.path.join(HERE, "smollm2-135m-instruct")}
BINARY = os.environ.get("ATTUNE_BIN") or os.path.join(ROOT, "target", "release", "attune")
BROKEN = "exact, prompts scrambled (rejected)"


def scrambled_copy(src, dst):
    """The folder with the ids of its ordinary tokens rotated in tokenizer.json: the same weights,
    but every prompt reaches the model as other tokens (and its replies decode as other text)."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    special = {t["id"] for t in tok.get("added_tokens", [])}
    ids = sorted(i for i in vocab.values() if i not in special)
    shift = {a: b for a, b in zip(ids, ids[7:] + ids[:7])}
    tok["model"]["vocab"] = {k: shift.get(v, v) for k, v in vocab.items()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    return dst


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    missing = accuracy.missing_parts(accuracy.GGUF, FOLDERS)
    if missing:
        pytest.fail(missing)
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"no attune binary at {BINARY} (run: make build)")
    broken = scrambled_copy(FOLDERS["attune exact"], str(tmp_path_factory.mktemp("scrambled") / "folder"))
    return factual.measure(accuracy.GGUF, {**FOLDERS, BROKEN: broken}, BINARY)


def test_report(rows, capsys):
    with capsys.disabled():
        print("\n" + factual.table(rows))
        for i, (q, _) in enumerate(factual.QUESTIONS):
            print(f"{q} | " + " | ".join(f"{n}: {r['answers'][i][:60]!r}" for n, r in rows.items() if n != BROKEN))


def test_llama_cpp_answers_most_questions(rows):
    """The bar means something: llama.cpp on these weights gets most of the questions right."""
    assert rows["llama.cpp"]["right"] >= len(factual.QUESTIONS) // 2, rows["llama.cpp"]


@pytest.mark.parametrize("name", list(FOLDERS))
def test_profile_answers_as_well_as_llama_cpp(rows, name):
    ok, reasons = factual.verdict(rows[name], rows["llama.cpp"])
    assert ok, f"{name}: " + "; ".join(reasons) + f" ({rows[name]['right']} right)"


def test_a_broken_folder_is_rejected(rows):
    ok, reasons = factual.verdict(rows[BROKEN], rows["llama.cpp"])
    assert not ok and reasons, rows[BROKEN]


def test_the_answer_check():
    assert factual.right("The capital of France is Paris.", ["Paris"])
    assert not factual.right("Parisian cafes are nice.", ["Paris"])
    assert factual.right("There are 7 days.", ["seven", "7"]) and not factual.right("17 days", ["7"])
    assert factual.right("Plants take in carbon dioxide.", ["carbon dioxide", "CO2"])
