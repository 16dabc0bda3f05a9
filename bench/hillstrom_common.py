"""What the Hillstrom benchmarks share (``bench/hillstrom.py``, ``bench/hillstrom_select.py``): their command
line's common arguments, the imported campaign and production's learners.

The scripts put the repository on ``sys.path`` before importing this module (they run as files)."""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

from features.importers import import_hillstrom
from features.io import load_shop
from training.uplift_learners import Base, Production
from training.uplift_randomised import Campaign, campaign_from_shop

ROOT = Path(__file__).resolve().parents[1]


def add_campaign_arguments(ap: argparse.ArgumentParser, out: str) -> None:
    """``--src`` (the Hillstrom file's folder), ``--work`` (where it is imported), ``--seeds`` and ``--out``
    (default ``bench/<out>``)."""
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "hillstrom"))
    ap.add_argument("--work", default=str(ROOT / "var" / "bench" / "hillstrom"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / out))


def load_campaign(src: str | Path, work: str | Path) -> Campaign:
    """Log at INFO, quiet scikit-uplift's deprecation warning, import the file into ``work`` unless it is
    there already, and read the campaign back from that shop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # scikit-uplift calls a deprecated sklearn helper
    warnings.filterwarnings("ignore", message=".*stable_cumsum.*")
    work = Path(work)
    if not (work / "offer_log.parquet").exists():
        import_hillstrom(src, work)
    return campaign_from_shop(load_shop(work))


def production(learner: str) -> Callable[[int], Production]:
    """seed -> the shipped ``UpliftModel`` with ``learner``, unfitted (on every attribute)."""
    return lambda s: Production(Base(seed=s), learner)
