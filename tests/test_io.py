"""``atomic_write``: all or nothing, no temporary files left, and the mode a plain ``open`` would give."""

import os
import stat

import pytest

from dtypelab._io import atomic_write


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_gets_the_umask_mode_and_an_overwrite_keeps_the_old_mode(tmp_path, umask_022):
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, "one")
    assert p.read_text() == "one" and _mode(p) == 0o644  # mkstemp would give 0600
    p.chmod(0o640)
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and _mode(p) == 0o640
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(p, boom)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_bad_data_and_unwritable_directory(tmp_path):
    with pytest.raises(TypeError, match="str, bytes or a writer"):
        atomic_write(tmp_path / "x", 3)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(OSError):  # works for root too, unlike a read-only directory
        atomic_write(blocker / "x", "data")
    assert [x.name for x in tmp_path.iterdir()] == ["file"]
