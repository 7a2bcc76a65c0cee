"""Attune: an on-device LLM runtime that learns from the person using it.

The Python binding of the Rust core (the same objects as the C API and the Java binding)::

    import attune

    with attune.Runtime({"engine": {"model_dir": "models/tiny"}, "store": {"dir": "/tmp/attune"}}) as rt:
        with rt.open_session("ada") as s:
            reply = s.generate("Hello!", on_text=lambda piece: print(piece, end=""))
            s.feedback_thumbs(reply.episode_id, True)
            print(s.update()["outcome_name"])
            s.save()

Every failure raises :class:`AttuneError`; its ``status`` is the C API's status name
(``"ATTUNE_STATUS_INVALID_REWARD"``, ...) and ``code`` the stable number.
"""

from ._native import AttuneError, Reply, Runtime, Session, status_name

__all__ = ["AttuneError", "Reply", "Runtime", "Session", "status_name"]
