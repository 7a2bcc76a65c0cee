"""Fixtures of the Python binding's tests: the tiny model's configuration (the same as the C and
Java tests'), temporary stores, and a check that a call raises AttuneError with a given status."""

import os
import pathlib

import pytest

try:
    import attune
except ImportError as e:  # a missing build is a failure with the command that fixes it, never a skip
    raise ImportError(f"the attune Python binding is not installed in this venv ({e}): run `make test-python-binding`") from e

ROOT = pathlib.Path(__file__).resolve().parents[3]


def model_dir() -> str:
    d = os.environ.get("ATTUNE_TEST_MODEL") or str(ROOT / "models" / "tiny")
    if not pathlib.Path(d).is_dir():
        raise RuntimeError(f"no test model at {d}: run `make setup-test`")
    return d


def config(store=None, auto_update_after=100) -> dict:
    """The tiny model on the CPU with a small KV cache and short probes, no rate limit, an update
    after every `auto_update_after` rewards; no store keeps adapters in memory."""
    return {
        "engine": {"model_dir": model_dir(), "execution_providers": ["cpu"], "threads": 2, "max_context": 256},
        "store": {"dir": str(store), "keep_versions": 4} if store else {},
        "learner": {"auto_update_after": auto_update_after, "max_updates_per_minute": 0, "max_same_sign_run": 0, "lr": 0.01},
        "generation": {"max_new_tokens": 12, "sampling": {"temperature": 0.8, "seed": 7}},
        "probe_prompts": ["Hello there."],
        "probe_tokens": 4,
    }


def seeded(seed: int, max_new_tokens: int) -> dict:
    return {"max_new_tokens": max_new_tokens, "sampling": {"temperature": 1.0, "seed": seed}}


def expect_status(status: str, call, *args, **kwargs) -> "attune.AttuneError":
    with pytest.raises(attune.AttuneError) as info:
        call(*args, **kwargs)
    e = info.value
    assert e.status == status, str(e)
    assert attune.status_name(e.code) == status, "the code and the name agree"
    assert str(e).startswith(status + ": ")
    return e


def probe_kl(session) -> float:
    """The adapter's KL to the base model on the probe replies (0 for a fresh adapter)."""
    return session.stats()["probe"]["kl"]


@pytest.fixture
def runtime():
    with attune.Runtime(config()) as rt:
        yield rt


@pytest.fixture
def session(runtime):
    with runtime.open_session("py-test") as s:
        yield s


# ONNX Runtime's WebGPU plugin wants a runtime directory even when only the CPU is used.
os.makedirs(os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/attune-xdg"), exist_ok=True)


