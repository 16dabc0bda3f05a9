"""The serving bundle's format version: a component saved in another format is refused by name."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from models.bundle import FORMAT_VERSION, BundleFormatError, load_component


def _write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_a_component_in_this_format_loads_without_its_stamp(tmp_path: Path) -> None:
    p = _write(tmp_path / "value.pkl", {"value": 1, "meta": {}, "format_version": FORMAT_VERSION})
    assert load_component(p) == {"value": 1, "meta": {}}


@pytest.mark.parametrize(("stamp", "found"), [(None, 1), (FORMAT_VERSION + 1, FORMAT_VERSION + 1)])
def test_a_component_in_another_format_is_refused_with_what_to_do(tmp_path: Path, stamp: int | None,
                                                                   found: int) -> None:
    obj: dict[str, object] = {"value": 1, "meta": {}}
    if stamp is not None:
        obj["format_version"] = stamp
    p = _write(tmp_path / "value.pkl", obj)  # no stamp: written before formats were versioned (format 1)
    with pytest.raises(BundleFormatError, match=rf"value.pkl: bundle format {found}, this code reads format "
                                                rf"{FORMAT_VERSION}; retrain"):
        load_component(p)
