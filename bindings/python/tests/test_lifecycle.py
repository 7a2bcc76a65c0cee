import threading

import attune
from conftest import config, expect_status, seeded


def test_open_generate_close():
    with attune.Runtime(config()) as rt:
        assert rt.context_tokens() == 256
        with rt.open_session("ada") as s:
            assert s.user_id == "ada"
            r = s.generate("Hello, how are", kind="text", options=seeded(1, 6))
            assert isinstance(r, attune.Reply)
            assert r.episode_id is not None and 1 <= r.tokens <= 6
            d = r.to_dict()
            assert d["episode_id"] == r.episode_id and d["text"] == r.text == str(r)
            assert set(d["timings"]) >= {"prefill_s", "decode_s"}
            nxt = s.generate("What is two plus two?")
            assert nxt.episode_id > r.episode_id, "episode ids only grow"
            preview = s.generate_unrecorded("Hi")
            assert preview.episode_id is None and preview.to_dict()["episode_id"] is None
        assert s.closed
    assert rt.closed


def test_seeded_generation_is_reproducible_and_options_take_json_text(runtime):
    with runtime.open_session("a") as a, runtime.open_session("b") as b:
        x = a.generate("Once upon a time", kind="text", options=seeded(3, 10))
        y = b.generate("Once upon a time", kind="text", options='{"max_new_tokens": 10, "sampling": {"temperature": 1.0, "seed": 3}}')
        assert (x.text, x.tokens) == (y.text, y.tokens)


def test_chat_prompts_as_lists_or_json(session):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    a = session.generate(msgs, options=seeded(4, 5))
    b = session.generate('[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]', kind="chat", options=seeded(4, 5))
    assert a.text == b.text


def test_one_open_session_per_user(runtime):
    s = runtime.open_session("sam")
    expect_status("ATTUNE_STATUS_BUSY", runtime.open_session, "sam")
    s.close()
    with runtime.open_session("sam") as again:
        assert again.user_id == "sam"


def test_closing_twice_is_harmless_and_use_after_close_raises():
    rt = attune.Runtime(config())
    s = rt.open_session("kim")
    s.close()
    s.close()
    e = expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.generate, "Hi")
    assert "closed" in e.message
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.save)
    expect_status("ATTUNE_STATUS_INVALID_ARGUMENT", s.feedback_thumbs, 0, True)
    rt.close()
    rt.close()
    expect_status("ATTUNE_STATUS_RUNTIME_CLOSED", rt.open_session, "kim")
    expect_status("ATTUNE_STATUS_RUNTIME_CLOSED", rt.context_tokens)


def test_a_session_outliving_its_runtime_fails_until_closed():
    rt = attune.Runtime(config())
    s = rt.open_session("lee")
    r = s.generate("Hi")
    rt.close()
    expect_status("ATTUNE_STATUS_RUNTIME_CLOSED", s.generate, "Hi")
    expect_status("ATTUNE_STATUS_RUNTIME_CLOSED", s.feedback_thumbs, r.episode_id, True)
    s.close()
    s.close()


def test_closing_the_runtime_from_the_callback_stops_generation():
    rt = attune.Runtime(config())
    with rt.open_session("mid") as s:
        pieces = []

        def hang_up(piece):
            pieces.append(piece)
            rt.close()
            return True

        expect_status("ATTUNE_STATUS_RUNTIME_CLOSED", s.generate, "Tell me a long story about", kind="text", options=seeded(2, 20), on_text=hang_up)
        assert len(pieces) == 1, "generation stopped at the next piece"


def test_sessions_of_different_users_on_two_threads(runtime):
    texts, failures = [None, None], []

    def run(n):
        try:
            with runtime.open_session(f"user-{n}") as s:
                texts[n] = s.generate("The weather today", kind="text", options=seeded(5, 8)).text
        except Exception as e:  # reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert texts[0] == texts[1] is not None
