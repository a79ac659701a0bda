"""processing.atomic_io: complete-or-absent outputs with the permissions of the process umask."""

import json
import os
import stat
from pathlib import Path

import pytest

from processing.atomic_io import atomic_dir, atomic_file, current_umask, replace_marked_section, write_json


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_json_respects_the_umask(tmp_path, umask_027):
    write_json(tmp_path / "out.json", {"a": 1})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert mode(tmp_path / "out.json") == 0o640  # mkstemp alone gives 0o600
    assert current_umask() == 0o027


def test_atomic_file_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp_name:
        Path(tmp_name).write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores.csv"]


def test_atomic_dir_replaces_a_folder_with_umask_permissions(tmp_path, umask_027):
    target = tmp_path / "export"
    (target / "stale").mkdir(parents=True)
    with atomic_dir(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "weights.bin").write_bytes(b"x")
        os.chmod(staging / "sub" / "weights.bin", 0o600)  # as safetensors writes its files
    assert sorted(os.listdir(target)) == ["sub"]
    assert (mode(target), mode(target / "sub"), mode(target / "sub" / "weights.bin")) == (0o750, 0o750, 0o640)
    assert os.listdir(tmp_path) == ["export"]  # no staging or moved-aside folder left


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert os.listdir(target) == ["old.txt"] and os.listdir(tmp_path) == ["export"]


def test_replace_marked_section_replaces_appends_and_keeps_the_rest(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\n## Tail\nkept\n")
    replace_marked_section(path, "new\n", "a")
    assert path.read_text() == "# Results\n\n<!-- a:start -->\nnew\n<!-- a:end -->\n\n## Tail\nkept\n"
    replace_marked_section(path, "b1", "b", heading="## Tail")  # the heading is there: no second one
    replace_marked_section(path, "c1", "c", heading="## New")
    replace_marked_section(path, "c2", "c", heading="## New")  # replaced in place, not appended again
    text = path.read_text()
    tail = "kept\n\n<!-- b:start -->\nb1\n<!-- b:end -->\n\n## New\n\n<!-- c:start -->\nc2\n<!-- c:end -->\n"
    assert text.endswith(tail)
    assert text.count("## Tail") == 1 and "c1" not in text
    replace_marked_section(tmp_path / "new" / "README.md", "x", "d")  # a missing file (and folder) is created
    assert (tmp_path / "new" / "README.md").read_text() == "<!-- d:start -->\nx\n<!-- d:end -->\n"
