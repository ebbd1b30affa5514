"""One writer per folder: a second process is refused with one line naming folder and holder."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.errors import DataError
from pipeline.locks import writer_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pipeline.locks import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=rf"{tmp_path}: another process \(pid {holder.pid}\)"):
            with writer_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with writer_lock(tmp_path):  # a killed holder leaves no stale lock
        pass


def test_lock_is_released_after_the_body_even_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with writer_lock(tmp_path / "out"):
            raise RuntimeError("stage failed")
    with writer_lock(tmp_path / "out"):
        pass
