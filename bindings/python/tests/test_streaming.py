import pytest

import attune
from conftest import seeded

STORY = "Tell me a long story about"


def test_the_pieces_make_up_the_reply(session):
    pieces = []
    r = session.generate(STORY, kind="text", options=seeded(2, 20), on_text=pieces.append)
    assert len(pieces) >= 2
    assert "".join(pieces) == r.text
    assert r.finish != "cancelled"


def test_returning_false_stops_generation(session):
    full = session.generate(STORY, kind="text", options=seeded(2, 20))
    pieces = []

    def barge_in(piece):
        pieces.append(piece)
        return len(pieces) < 2

    barged = session.generate(STORY, kind="text", options=seeded(2, 20), on_text=barge_in)
    assert len(pieces) == 2
    assert barged.finish == "cancelled"
    assert barged.text == "".join(pieces)
    assert full.text.startswith(barged.text)
    assert barged.tokens < full.tokens
    # A cancelled reply is an episode that takes feedback.
    assert session.feedback_thumbs(barged.episode_id, False) == "queued"


def test_only_false_stops(session):
    seen = []
    r = session.generate(STORY, kind="text", options=seeded(2, 6), on_text=lambda p: seen.append(p) or 0)
    assert r.finish != "cancelled" and len(seen) >= 2, "0 and None go on; only False stops"


def test_an_exception_in_the_callback_stops_and_propagates(session):
    class HungUp(Exception):
        pass

    def boom(piece):
        raise HungUp("user hung up")

    with pytest.raises(HungUp):
        session.generate(STORY, kind="text", options=seeded(2, 20), on_text=boom)
    assert session.generate("Hi").tokens >= 1, "the session is usable afterwards"


def test_calls_on_the_session_from_its_callback_are_busy(session):
    statuses = []

    def reenter(piece):
        for call in (lambda: session.generate("nested"), session.close, session.save):
            try:
                call()
            except attune.AttuneError as e:
                statuses.append(e.status)
        return False

    session.generate(STORY, kind="text", options=seeded(2, 8), on_text=reenter)
    assert statuses == ["ATTUNE_STATUS_BUSY"] * 3
    assert not session.closed and session.generate("Hi").episode_id is not None


def test_another_session_may_be_used_from_the_callback(runtime, session):
    with runtime.open_session("other") as other:
        ids = []
        session.generate("Hello", kind="text", options=seeded(2, 4),
                         on_text=lambda p: ids.append(other.generate("Hi", kind="text", options=seeded(1, 2)).episode_id))
        assert ids
