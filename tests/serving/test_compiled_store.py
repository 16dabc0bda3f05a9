"""Compiled models kept in files (:mod:`serving.compiled_store`): what is put is got back, whole; a key that
is not a plain name is refused; a directory that cannot be written is logged and compiling goes on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serving.compiled_store import DirectoryStore


def test_code_put_is_got_back_from_its_own_file(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "compiled")
    assert store.get("abc123") is None  # nothing yet, and no directory made for it
    assert not (tmp_path / "compiled").exists()
    store.put("abc123", b"\x7fELF one")
    store.put("def456", b"\x7fELF two")
    assert store.get("abc123") == b"\x7fELF one" and store.get("def456") == b"\x7fELF two"
    assert sorted(p.name for p in (tmp_path / "compiled").iterdir()) == ["abc123.o", "def456.o"]
    store.put("abc123", b"\x7fELF again")  # replaced whole
    assert DirectoryStore(tmp_path / "compiled").get("abc123") == b"\x7fELF again"


def test_a_key_must_be_a_plain_name(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    for bad in ("../x", "a/b", "", "a.o"):
        with pytest.raises(ValueError, match="letters and digits"):
            store.get(bad)


def test_a_store_that_cannot_be_written_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = DirectoryStore(blocker / "compiled")
    with caplog.at_level(logging.WARNING, logger="serving.compiled_store"):
        store.put("abc123", b"code")
    assert "could not keep the compiled model" in caplog.text
    assert store.get("abc123") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary file left behind
