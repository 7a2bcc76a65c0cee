import attune
from conftest import config, expect_status, probe_kl, seeded

GREEDY = {"max_new_tokens": 10, "sampling": {"temperature": 0}}


def train(s):
    """Trains until an update is accepted, so that the adapter differs from a fresh one."""
    for rnd in range(6):
        for i in range(4):
            r = s.generate("Say something nice", kind="text", options=seeded(rnd * 10 + i, 6))
            s.feedback_thumbs(r.episode_id, i % 2 == 0)
        if s.update()["outcome_name"] == "accepted":
            return
    raise AssertionError(f"no update was accepted in six rounds: {s.stats()}")


def greedy(s):
    return s.generate_unrecorded("Say something nice", kind="text", options=GREEDY).text


def test_a_saved_adapter_is_loaded_by_the_next_session(tmp_path):
    with attune.Runtime(config(tmp_path)) as rt, rt.open_session("pat") as s:
        train(s)
        trained = probe_kl(s)
        accepted = s.stats()["counters"]["accepted"]
        assert trained > 0
        assert s.save() == 1
        assert s.save() == 2
        pending = s.generate("Remember me").episode_id
    # A new runtime (a restart) loads the newest version and the pending episode.
    with attune.Runtime(config(tmp_path)) as rt, rt.open_session("pat") as s:
        assert probe_kl(s) == trained, "the saved adapter is the one loaded"
        stats = s.stats()
        assert stats["restored_episodes"] >= 1 and stats["counters"]["accepted"] == accepted
        assert s.generate("Hi").episode_id > pending, "ids continue past the last session's"
        assert s.feedback_thumbs(pending, True) == "queued"


def test_rollback_reset_export_and_import(tmp_path):
    with attune.Runtime(config(tmp_path)) as rt:
        with rt.open_session("ray") as s:
            assert probe_kl(s) == 0.0
            assert s.save() == 1
            train(s)
            learned, learned_reply = probe_kl(s), greedy(s)
            assert learned > 0
            assert s.save() == 2
            image = s.export_adapter()
            assert isinstance(image, bytes) and image
            # Versions: 1 fresh, 2 learned (an export saves no version).
            s.rollback(1)
            expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.rollback, 0)
            expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.rollback, -1)
            expect_status("ATTUNE_STATUS_STORE", s.rollback, 100)
        with rt.open_session("ray") as s:
            assert probe_kl(s) == 0.0, "one version back is the fresh adapter"
            s.rollback()
        with rt.open_session("ray") as s:
            assert probe_kl(s) == learned, "a rollback can be undone"
            s.reset()
            assert probe_kl(s) == 0.0
        with rt.open_session("ray") as s:
            assert probe_kl(s) == 0.0, "the reset is what the store holds"
            s.import_adapter(image)
            assert probe_kl(s) == learned and greedy(s) == learned_reply
            damaged = bytearray(image)
            damaged[len(damaged) // 2] ^= 0x5A
            expect_status("ATTUNE_STATUS_CORRUPT_ADAPTER", s.import_adapter, bytes(damaged))
            expect_status("ATTUNE_STATUS_CORRUPT_ADAPTER", s.import_adapter, image[:10])
            assert probe_kl(s) == learned, "a refused import changes nothing"
        with rt.open_session("ray") as s:
            assert probe_kl(s) == learned, "the import is what the store holds"


def test_forget_deletes_the_user_and_stops_writes(tmp_path):
    with attune.Runtime(config(tmp_path)) as rt:
        with rt.open_session("gone") as s:
            eid = s.generate("Hi").episode_id
            s.save()
            s.forget()
            expect_status("ATTUNE_STATUS_USER_FORGOTTEN", s.save)
            expect_status("ATTUNE_STATUS_UNKNOWN_EPISODE", s.feedback_thumbs, eid, True)
        assert rt.forget_user("gone") is False
        with rt.open_session("other") as s:
            s.save()
        assert rt.forget_user("other") is True
        expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", rt.forget_user, "")


def test_without_a_store_saving_is_a_store_error(session):
    expect_status("ATTUNE_STATUS_STORE", session.save)
    expect_status("ATTUNE_STATUS_STORE", session.export_adapter)
