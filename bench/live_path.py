"""In-process cost of the storefront's live path and the CRM's offers: milliseconds per call, no HTTP.

Loads the 20,000-customer shop's trained models (``bench/sections.py train sim20k``) into a
:class:`serving.runtime.Personaliser` on a fresh live store, gives 300 customers live events, then times
``recommend`` for them (default request and exclude-bought; then the answer kept for a live customer
until their events change, as the service reuses it), ``offers`` for one customer, ``offers_batch``
of 1,000 customers and ``customer_profile`` (computed, and the rendered answer the service reuses). Prints one
JSON line.

    python bench/live_path.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROJECT = Path(os.environ.get("LIVE_PATH_PROJECT", ROOT / "var" / "bench" / "train_sim20k"))
BUNDLE = os.environ.get("PERSONALISE_BUNDLE")
"""A local bundle to serve instead of the project's champion (as ``personalise serve --bundle``)."""

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.schema import CUSTOMER_ID, PRODUCT_ID  # noqa: E402


def _ms(fn: Any, args: list[Any]) -> dict[str, float]:
    """Milliseconds per call of ``fn(*a)`` for each ``a`` of ``args`` (median, p99, mean)."""
    t = []
    for a in args:
        t0 = time.perf_counter()
        fn(*a)
        t.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": round(float(np.median(t)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "mean_ms": round(float(np.mean(t)), 3),
        "calls": len(t),
    }


def measure(calls: int = 300, seed: int = 7) -> dict[str, Any]:
    from serving.runtime import Personaliser

    orders = pd.read_parquet(PROJECT / "shop" / "orders.parquet")
    ids = orders[CUSTOMER_ID].drop_duplicates().head(2000).astype(str).tolist()
    products = orders[PRODUCT_ID].drop_duplicates().astype(str).tolist()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        p = Personaliser(PROJECT, BUNDLE, store_url=f"sqlite:///{tmp}/live.db")
        try:
            assert p.current is not None, p.load_error
            live = ids[:calls]
            kinds = ["view", "view", "view", "add_to_cart", "wishlist"]
            p.add_events(
                [
                    {
                        "customer_id": c,
                        "product_id": products[int(rng.integers(len(products)))],
                        "event_type": kinds[int(rng.integers(len(kinds)))],
                    }
                    for c in live
                    for _ in range(5)
                ]
            )
            out: dict[str, Any] = {}
            for c in live[:20]:  # warm-up
                p.recommend(c, 10, None, False, [])
            out["recommend_live"] = _ms(p.recommend, [(c, 10, None, False, []) for c in live])
            out["recommend_live_exclude_bought"] = _ms(p.recommend, [(c, 10, None, True, []) for c in live])
            def render(a: dict[str, Any]) -> bytes:
                return json.dumps(a).encode()

            deadline = time.monotonic() + 60  # the watcher reads the events into memory
            while any(p.live_answer(c, 10, None, False, render) is None for c in live):
                assert time.monotonic() < deadline, "the live watcher did not read the events in 60 s"
                time.sleep(0.05)
            out["recommend_live_kept"] = _ms(p.live_answer, [(c, 10, None, False, render) for c in live])
            out["recommend_cached"] = _ms(
                p.recommend, [(c, 10, None, False, []) for c in ids[calls : 2 * calls]]
            )
            out["offers_one"] = _ms(p.offers, [([c], None, "bench") for c in ids[:calls]])
            out["offers_batch_1000"] = _ms(
                p.offers, [(ids[i : i + 1000], None, "bench") for i in (0, 500, 1000)]
            )
            out["customer_profile"] = _ms(p.profile, [(c,) for c in ids[:calls]])
            for c in ids[:calls]:  # rendered once per customer and load: the service's repeat answers
                p.profile_body(c)
            out["customer_profile_rendered"] = _ms(p.profile_body, [(c,) for c in ids[:calls]])
            return out
        finally:
            p.close()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    print(json.dumps(measure(ap.parse_args().calls)))
