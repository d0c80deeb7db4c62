"""tree.py's directory operations, as root and (tests/test_plain_user.py) as the
owner of a read-only tree, who may not write into it, nor move it elsewhere, without chmod."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from envcache import tree


def read_only_tree(root: Path) -> Path:
    """``root/t``: a package-like tree made read-only as envs are, plus a directory whose
    owner may neither list nor enter it."""
    top = root / "t"
    (top / "pkg" / "__pycache__").mkdir(parents=True)
    (top / "pkg" / "__init__.py").write_text("x = 1\n")
    (top / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (top / "locked").mkdir()
    (top / "locked" / "inside").write_text("")
    (top / "link").symlink_to("pkg")
    tree.make_read_only(top)
    (top / "locked").chmod(0o000)
    top.chmod(tree.READ_ONLY_DIR)
    return top


def test_remove_tree_removes_a_read_only_tree(tmp_path: Path) -> None:
    top = read_only_tree(tmp_path)
    tree.remove_tree(top)
    assert os.listdir(tmp_path) == []


def test_remove_tree_leaves_what_a_symlink_points_to(tmp_path: Path) -> None:
    top = read_only_tree(tmp_path)
    (tmp_path / "alias").symlink_to(top)
    tree.remove_tree(tmp_path / "alias")
    assert sorted(os.listdir(tmp_path)) == ["t"]
    assert stat.S_IMODE(top.stat().st_mode) == tree.READ_ONLY_DIR
    tree.remove_tree(top)


def test_move_dir_moves_a_read_only_directory_elsewhere_keeping_its_mode(
    tmp_path: Path,
) -> None:
    top = read_only_tree(tmp_path)
    (tmp_path / "trash").mkdir()
    tree.move_dir(top, tmp_path / "trash" / "t")
    moved = tmp_path / "trash" / "t"
    assert not top.exists() and (moved / "pkg" / "__init__.py").read_text() == "x = 1\n"
    assert stat.S_IMODE(moved.stat().st_mode) == tree.READ_ONLY_DIR
    tree.remove_tree(moved)


def test_move_dir_reports_what_it_cannot_do_and_changes_nothing(tmp_path: Path) -> None:
    top = read_only_tree(tmp_path)
    with pytest.raises(FileNotFoundError):
        tree.move_dir(top, tmp_path / "missing" / "t")
    assert stat.S_IMODE(top.stat().st_mode) == tree.READ_ONLY_DIR
    if os.geteuid() != 0:  # root may write into any directory
        closed = tmp_path / "closed"
        closed.mkdir(mode=0o555)
        with pytest.raises(PermissionError):
            tree.move_dir(top, closed / "t")
        assert stat.S_IMODE(top.stat().st_mode) == tree.READ_ONLY_DIR
    tree.remove_tree(top)
