"""Compiled models kept in files between loads: a :class:`models.compiled_trees.CodeStore` over a directory
(``DATA/compiled``), so that a model is compiled once per machine, not at every start or reload.

A file is written whole or not at all (beside its name, then renamed), so replicas loading the same model at
once may both compile it but never read half a file. A store that cannot be read or written is logged and
compiling goes on without it. Files of models no longer served stay (a few hundred KB each).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class DirectoryStore:
    """Machine code by key, one file ``<key>.o`` each in ``directory`` (created when first written)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"a compiled model's key is letters and digits, not {key!r}")
        return self.directory / f"{key}.o"

    def get(self, key: str) -> bytes | None:
        p = self.path(key)
        try:
            return p.read_bytes() if p.is_file() else None
        except OSError:
            log.warning("could not read the compiled model %s: compiling it", p, exc_info=True)
            return None

    def put(self, key: str, code: bytes) -> None:
        p = self.path(key)
        tmp = None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(code)
            os.replace(tmp, p)
        except OSError:
            log.warning("could not keep the compiled model at %s: it is compiled again at the next load", p,
                        exc_info=True)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
