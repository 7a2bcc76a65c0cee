"""models/vader.py: the lexicons in models/vader/ are byte-for-byte those of the installed
vadersentiment==3.3.2, and a second run leaves a complete folder alone."""
from __future__ import annotations

import importlib.metadata
import os

import vader

FILES = ["vader_lexicon.txt", "emoji_utf8_lexicon.txt"]


def test_lexicons_are_the_packages_and_the_copy_is_idempotent():
    assert vader.main() == 0
    dist = importlib.metadata.distribution("vadersentiment")
    assert dist.version == vader.VERSION
    for name in FILES:
        with open(os.path.join(vader.OUT, name), "rb") as a, open(dist.locate_file("vaderSentiment/" + name), "rb") as b:
            assert a.read() == b.read(), name
    stamp = [os.stat(os.path.join(vader.OUT, n)).st_mtime_ns for n in FILES]
    assert vader.main() == 0
    assert [os.stat(os.path.join(vader.OUT, n)).st_mtime_ns for n in FILES] == stamp
