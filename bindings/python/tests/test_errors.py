import math

import pytest

import attune
from conftest import config, expect_status, model_dir


def test_runtime_configurations():
    e = expect_status("ATTUNE_STATUS_MODEL", attune.Runtime, {"engine": {"model_dir": "/nonexistent/model"}})
    assert "/nonexistent/model" in e.message and e.code == 22
    expect_status("ATTUNE_STATUS_INVALID_JSON", attune.Runtime, "{not json")
    expect_status("ATTUNE_STATUS_INVALID_JSON", attune.Runtime, [])
    expect_status("ATTUNE_STATUS_INVALID_JSON", attune.Runtime, {"engine": {"model_dir": object()}})
    expect_status("ATTUNE_STATUS_CONFIG", attune.Runtime, {"engine": {"model_dir": model_dir()}, "colour": 1})
    expect_status("ATTUNE_STATUS_CONFIG", attune.Runtime, {"engine": {"model_dir": model_dir(), "execution_providers": ["abacus"]}})


def test_sessions(runtime):
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", runtime.open_session, "")


def test_generation(session):
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", session.generate, "")
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.generate, "not messages", kind="chat")
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.generate, [{"role": "user"}])
    expect_status("ATTUNE_STATUS_INVALID_ENUM", session.generate, "Hi", kind="poem")
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.generate, "Hi", options='{"max_new_tokens": ')
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.generate, "Hi", options={"speed": 3})
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", session.generate, "Hi", options={"sampling": {"temperature": -1}})
    expect_status("ATTUNE_STATUS_CONTEXT_OVERFLOW", session.generate, "word " * 400, kind="text")
    expect_status("ATTUNE_STATUS_NULL_ARGUMENT", session.generate, None)
    with pytest.raises(TypeError):
        session.generate("Hi", kind=3)


def test_feedback(session):
    eid = session.generate("Hi").episode_id
    e = expect_status("ATTUNE_STATUS_UNKNOWN_EPISODE", session.feedback_thumbs, 987654321, True)
    assert "987654321" in e.message
    for bad in (math.nan, math.inf, -math.inf, 1.5, -2):
        expect_status("ATTUNE_STATUS_INVALID_REWARD", session.feedback, eid, bad)
    for stars in (0, 6, -3):
        expect_status("ATTUNE_STATUS_INVALID_REWARD", session.feedback_stars, eid, stars)
    expect_status("ATTUNE_STATUS_INVALID_REWARD", session.feedback_score, eid, "csat", math.nan)
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.feedback_json, eid, '{"thumbs": ')
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.feedback_json, eid, {"smile": 1})
    expect_status("ATTUNE_STATUS_INVALID_JSON", session.feedback_json, eid, {"thumbs": True, "stars": 2})
    expect_status("ATTUNE_STATUS_INVALID_REWARD", session.feedback_json, eid, {"stars": 9})
    assert session.stats()["counters"]["feedback"] == 0, "no refused reward was recorded"


def test_errors_are_attune_errors_with_status_and_code():
    assert issubclass(attune.AttuneError, Exception)
    assert attune.AttuneError.__module__ == "attune" and attune.AttuneError.__name__ == "AttuneError"
    assert attune.status_name(0) == "ATTUNE_STATUS_OK"
    assert attune.status_name(30) == "ATTUNE_STATUS_INVALID_REWARD"
    assert attune.status_name(12345) == "ATTUNE_STATUS_UNKNOWN"
    with pytest.raises(attune.AttuneError) as info:
        attune.Runtime(config() | {"probe_tokens": "four"})
    assert (info.value.status, info.value.code) == ("ATTUNE_STATUS_CONFIG", 25)
