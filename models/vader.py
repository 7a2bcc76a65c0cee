#!/usr/bin/env python3
"""Copy VADER's lexicons from the installed PyPI package vadersentiment==3.3.2 (MIT) to models/vader/.

    python models/vader.py        (models/prepare.sh runs this with the venv's python)

The Rust sentiment analyser (src/learn/sentiment.rs) reads vader_lexicon.txt and
emoji_utf8_lexicon.txt from there; the files are never committed. Each file is checked against the
hash the wheel's RECORD lists for it, and the folder is replaced atomically (written beside, then
renamed). Idempotent: a complete folder with the right hashes is left alone.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "vader")
VERSION = "3.3.2"
FILES = ["vaderSentiment/vader_lexicon.txt", "vaderSentiment/emoji_utf8_lexicon.txt"]
LICENSE = "LICENSE.txt"


def digest(path: str) -> str:
    with open(path, "rb") as f:
        raw = hashlib.sha256(f.read()).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main() -> int:
    try:
        dist = importlib.metadata.distribution("vadersentiment")
    except importlib.metadata.PackageNotFoundError:
        print("vadersentiment is not installed in this python: run `make setup` (models/requirements.txt)", file=sys.stderr)
        return 1
    if dist.version != VERSION:
        print(f"vadersentiment {dist.version} is installed; models/requirements.txt pins {VERSION}: run `make setup`", file=sys.stderr)
        return 1
    record = {}
    for line in (dist.read_text("RECORD") or "").splitlines():
        parts = line.split(",")
        if len(parts) >= 2 and parts[1]:
            record[parts[0]] = parts[1]
    sources = {}
    for rel in FILES:
        path = str(dist.locate_file(rel))
        if rel not in record or digest(path) != record[rel]:
            print(f"{path} does not match the hash in vadersentiment's RECORD: reinstall it", file=sys.stderr)
            return 1
        sources[os.path.basename(rel)] = (path, record[rel])
    if all(os.path.exists(os.path.join(OUT, name)) and digest(os.path.join(OUT, name)) == want for name, (_, want) in sources.items()):
        return 0
    tmp = OUT + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, (path, _) in sources.items():
        shutil.copyfile(path, os.path.join(tmp, name))
    licence = dist.read_text(LICENSE)
    if licence:
        with open(os.path.join(tmp, LICENSE), "w", encoding="utf-8") as f:
            f.write(licence)
    shutil.rmtree(OUT, ignore_errors=True)
    os.rename(tmp, OUT)
    print(f"models/vader: VADER lexicons of vadersentiment {VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
