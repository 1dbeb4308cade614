"""The one atomic write, for files and folders: an interruption leaves the old or the new, never half."""

import pytest

from wham_gym.atomic import atomic_dir, atomic_write


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, lambda f: f.write("old"), binary=False)

    def fail(f):
        f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail, binary=False)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any file we write (not mkstemp's 0600)


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as d:
        (d / "x.txt").write_text("first")
    assert (out / "x.txt").read_text() == "first"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(out, hint="pass --overwrite"):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as d:
            (d / "x.txt").write_text("second, half done")
            raise RuntimeError("interrupted")
    assert (out / "x.txt").read_text() == "first"  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left
    with atomic_dir(out, overwrite=True) as d:
        (d / "y.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["y.txt"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
