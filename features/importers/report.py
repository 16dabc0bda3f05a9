"""What an importer kept, dropped (and why) and wrote, and writing a shop directory with that report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from features.io import write_table

REPORT_FILE = "import_report.yaml"


@dataclass
class ImportReport:
    source: str
    input_rows: int = 0
    kept_rows: int = 0
    returns: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Importer-specific accounting (e.g. rows per arm of a randomised campaign)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "input_rows": self.input_rows, "kept_rows": self.kept_rows,
               "returns": self.returns, "dropped": self.dropped, "tables": self.tables}
        return {**out, "details": self.details} if self.details else out


def read_text_csv(path: Path) -> pd.DataFrame:
    """A source CSV read as text (empty cells missing): the importer decides the types."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def write_shop(out: Path, rep: ImportReport, tables: dict[str, pd.DataFrame],
               yamls: dict[str, Any] | None = None) -> None:
    """Write ``tables`` (counting their rows in ``rep.tables``), the ``yamls`` files (name -> content) and
    then the import report into the shop directory ``out``."""
    for name, t in tables.items():
        write_table(t, out, name)
        rep.tables[name] = len(t)
    for filename, content in (yamls or {}).items():
        (out / filename).write_text(yaml.safe_dump(content, sort_keys=False))
    (out / REPORT_FILE).write_text(yaml.safe_dump(rep.to_dict(), sort_keys=False))
