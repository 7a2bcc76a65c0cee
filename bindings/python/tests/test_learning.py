import attune
from conftest import config, expect_status, probe_kl, seeded


def replies(s, n):
    return [s.generate("Say something nice", kind="text", options=seeded(10 + i, 6)) for i in range(n)]


def test_every_kind_of_feedback_queues_and_an_update_learns_from_them(session):
    expect_status("ATTUNE_STATUS_NOT_FOUND", session.last_report)
    expect_status("ATTUNE_STATUS_LEARNING", session.update)
    r = replies(session, 6)
    assert session.feedback_thumbs(r[0].episode_id, True) == "queued"
    assert session.feedback(r[1].episode_id, -0.5) == "queued"
    assert session.feedback_stars(r[2].episode_id, 5) == "queued"
    assert session.feedback_score(r[3].episode_id, "csat", 72) == "queued"
    assert session.feedback_json(r[4].episode_id, [{"outcome": 1, "weight": 0.7}, {"stars": 1, "weight": 0.3}]) == "queued"
    assert session.feedback_json(r[5].episode_id, '{"rule": 0.2}') == "queued"
    stats = session.stats()
    assert stats["counters"]["feedback"] == 6 and stats["user"] == "py-test"

    report = session.update()
    assert isinstance(report, dict)
    assert report["outcome_name"] == "accepted", report
    assert report["episodes"] == 6 and "algorithm" in report
    assert session.last_report() == report
    assert session.stats()["counters"]["updates"] == 1
    expect_status("ATTUNE_STATUS_LEARNING", session.update)


def test_an_accepted_update_moves_the_adapter(session):
    assert probe_kl(session) == 0.0, "a fresh adapter is the base model"
    accepted = 0
    for _ in range(4):
        for r in replies(session, 4):
            session.feedback_thumbs(r.episode_id, len(r.text) % 2 == 0)
        accepted += session.update()["outcome_name"] == "accepted"
    assert accepted >= 1
    assert session.stats()["counters"]["accepted"] == accepted
    assert probe_kl(session) > 0.0


def test_feedback_that_completes_a_batch_runs_the_update():
    with attune.Runtime(config(auto_update_after=2)) as rt, rt.open_session("batch") as s:
        r = replies(s, 2)
        assert s.feedback_thumbs(r[0].episode_id, True) == "queued"
        # The second reward completes the batch: its update applies a step (accepted here).
        assert s.feedback_thumbs(r[1].episode_id, False) == "updated"
        assert s.last_report()["outcome_name"] == "accepted" and s.last_report()["episodes"] == 2


def test_a_demonstration_is_learned_and_takes_no_feedback(session):
    eid = session.demonstrate("Greet me", "Hello! Nice to see you.")
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", session.feedback_thumbs, eid, True)
    assert session.update()["episodes"] == 1


def test_a_correction_is_learned_as_a_pair_and_its_reply_keeps_taking_feedback():
    cfg = config(auto_update_after=1)
    cfg["learner"]["pair_replay"] = 2  # replay is off by default; this test checks it
    with attune.Runtime(cfg) as rt, rt.open_session("fixer") as s:
        r = replies(s, 1)[0]
        assert s.correct(r.episode_id, "Sure, here is something nice.") == "updated"
        report = s.last_report()
        assert report["outcome_name"] == "accepted" and report["pairs"] == 1, report
        # The reply still takes its reward; that update replays the kept correction.
        assert s.feedback_thumbs(r.episode_id, False) == "updated"
        assert s.last_report()["replayed_pairs"] == 1
        expect_status("ATTUNE_STATUS_UNKNOWN_EPISODE", s.correct, 10**12, "x")
        expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.correct, r.episode_id, "   ")
        expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.correct, report["episode_ids"][0], "No.")
