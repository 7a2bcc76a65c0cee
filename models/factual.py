#!/usr/bin/env python3
"""Greedy answers to short factual questions: each model folder through the Attune engine (the
`attune generate` command, greedy by default) next to llama.cpp (llama-cpp-python, the same GGUF, the
same prompt token ids, greedy), each answer checked by a script (the words a right answer contains).

    python models/factual.py [--attune BIN] [--folder NAME=DIR ...] [--json OUT]

The criterion (models/test_factual.py): a folder's right answers are compared with llama.cpp's
question by question, by McNemar's exact one-sided test on the questions exactly one of the two gets
right (accuracy.mcnemar); the folder fails when it is worse than llama.cpp at p < accuracy.TOP1_ALPHA.
One greedy answer of a 135M model cannot choose a profile; 24 of them, judged against the peer on the
same weights, can tell a broken folder from a sound one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import accuracy  # noqa: E402

MAX_NEW_TOKENS = 40
# (question, the words one of which a right answer contains, matched as whole words, any case)
QUESTIONS = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("Which planet is the largest in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the chemical formula H2O commonly called?", ["water"]),
    ("How many days are there in a week?", ["seven", "7"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("At what temperature in degrees Celsius does water freeze?", ["0", "zero"]),
    ("At what temperature in degrees Celsius does water boil?", ["100"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("Who was the first president of the United States?", ["Washington"]),
    ("What is 2 plus 2?", ["4", "four"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "Vinci"]),
    ("What is the square root of 81?", ["9", "nine"]),
    ("What is the currency of Japan?", ["yen"]),
    ("How many continents are there on Earth?", ["seven", "7"]),
    ("Which gas do plants absorb from the air for photosynthesis?", ["carbon dioxide", "CO2"]),
    ("What is the longest river in Africa?", ["Nile"]),
    ("What language is spoken in Brazil?", ["Portuguese"]),
]


def right(answer: str, words) -> bool:
    return any(re.search(r"(?<![A-Za-z0-9.])" + re.escape(w) + r"(?![A-Za-z0-9])", answer, re.IGNORECASE)
               for w in words)


def prompt_ids(folder):
    """Each question as the engine renders it (chat template, default system prompt, generation
    prompt), tokenized with the folder's tokenizer."""
    import jinja2
    from tokenizers import Tokenizer

    with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
        tmpl = jinja2.Environment().from_string(json.load(f)["chat_template"])
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    texts = [tmpl.render(messages=[{"role": "user", "content": q}], add_generation_prompt=True) for q, _ in QUESTIONS]
    return [tok.encode(t).ids for t in texts], tok


def attune_answers(binary, folder):
    """The engine's greedy answers through the CLI (one process per question)."""
    out = []
    for q, _ in QUESTIONS:
        p = subprocess.run([binary, "generate", "--model", folder, "--threads", str(accuracy.THREADS),
                            "--max-new-tokens", str(MAX_NEW_TOKENS), q],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"attune generate failed on {q!r} ({p.returncode}): {p.stderr[-2000:]}")
        out.append(p.stdout.strip())
    return out


def llama_answers(gguf, ids_list, tok):
    """llama.cpp's greedy answers from the same prompt ids, in a child process (accuracy.py's)."""
    tokens = accuracy.llama_greedy(gguf, ids_list, MAX_NEW_TOKENS)
    return [tok.decode(t, skip_special_tokens=True).strip() for t in tokens]


def measure(gguf, folders: dict, binary):
    first = next(iter(folders.values()))
    ids_list, tok = prompt_ids(first)
    answers = {"llama.cpp": llama_answers(gguf, ids_list, tok)}
    for name, folder in folders.items():
        answers[name] = attune_answers(binary, folder)
    rows = {}
    for name, ans in answers.items():
        ok = [right(a, words) for a, (_, words) in zip(ans, QUESTIONS)]
        rows[name] = {"right": sum(ok), "questions": len(ok), "answers": ans,
                      "agree": "".join("1" if x else "0" for x in ok),
                      "same_as_llama": sum(a == b for a, b in zip(ans, answers["llama.cpp"]))}
    return rows


def verdict(row, llama_row, alpha=accuracy.TOP1_ALPHA):
    b, c, p = accuracy.mcnemar(row, llama_row)
    if p < alpha:
        return False, [f"{b} questions only llama.cpp answers right against {c} only this one does, "
                       f"McNemar one-sided p = {p:.2g} < {alpha}"]
    return True, []


def table(rows):
    base = rows["llama.cpp"]
    out = ["| runtime | right | only llama.cpp right | only this right | McNemar p | same text as llama.cpp | vs llama.cpp |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        if name == "llama.cpp":
            out.append(f"| {name} | {r['right']} / {r['questions']} | - | - | - | - | - |")
            continue
        b, c, p = accuracy.mcnemar(r, base)
        out.append(f"| {name} | {r['right']} / {r['questions']} | {b} | {c} | {p:.2g} | {r['same_as_llama']} "
                   f"| {'passes' if verdict(r, base)[0] else 'fails'} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=accuracy.GGUF)
    ap.add_argument("--attune", default=os.path.join(ROOT, "target", "release", "attune"))
    ap.add_argument("--folder", action="append", default=None, metavar="NAME=DIR")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    specs = a.folder or [f"attune fast={os.path.join(HERE, 'smollm2-135m-instruct-fast')}",
                         f"attune exact={os.path.join(HERE, 'smollm2-135m-instruct')}"]
    rows = measure(a.gguf, dict(s.split("=", 1) for s in specs), a.attune)
    print(table(rows))
    for i, (q, _) in enumerate(QUESTIONS):
        print(f"\n{q}")
        for name, r in rows.items():
            print(f"  {name} [{'right' if r['agree'][i] == '1' else 'wrong'}]: {r['answers'][i][:150]!r}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
