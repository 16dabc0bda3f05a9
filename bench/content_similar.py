"""Issue #21, a time-boxed search: does product content (Online Retail's descriptions and stock-code
families) add to production's TIFU-KNN-dominated blend? The same protocol as ``bench/tifu_repeat.py``: every
choice on the 56 tuning days before the cutoff, then the test window after it, the same judge.

    python bench/content_similar.py --shop DIR --raw ../shared/data/online_retail/online_retail.csv.gz \
        --cutoff 2011-09-01 [--out FILE.json]

For one cutoff C, two bases: *before* is ``tifu_repeat``'s base (production before rising: TIFU-KNN with its
tuned settings plus the corrections of :data:`bench.tifu_repeat.CHOSEN`), *now* is that plus rising at the
weight production's tuning chose (:data:`RISING_CHOSEN`): production as it is. Each content candidate is
added at the weights :data:`bench.tifu_repeat.STEPS` and NDCG@10 (all items, default business rules) is
measured (a) with data before C - 56 days against the 56 days and (b) with data before C against the test
window. Discovery (bought products excluded, products new to each customer): the discovery blend's weights
production chose (:data:`DISCOVERY_CHOSEN`), without its LightGBM re-ranker (not reconstructed here), plus
each candidate. Per-customer paired bootstraps (test) of the tuning-chosen weight against the base.

Product content is not in the data contract: the descriptions are read from the raw file, rows before the
window's cutoff only, the most frequent description of each upper-cased StockCode (the importer's
product_id) among positive-quantity lines with a customer.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from bench.tifu_common import CUTOFFS, emit, interactions, paired_bootstrap, start_logging
from bench.tifu_repeat import CHOSEN, STEPS, TUNE_DAYS, rising
from features.interactions import InteractionData
from features.io import Shop, load_shop
from models.recsys import DISCOVERY_RULES, MODELS, BusinessRules, RecommenderConfig
from models.recsys.blend import normalise, normalise_by_max
from models.recsys.tifu import TifuConfig, TIFUKNNRecommender, build_baskets
from training.blend_tuning import _Judge
from training.rec_truth import new_items_truth, purchase_truth

log = logging.getLogger("bench.content_similar")
RISING_CHOSEN = {"2011-06-01": 0.2, "2011-09-01": 0.5, "2011-11-01": 0.2}
"""The rising weight production's tuning chose at each cutoff (bench/TIFU.md)."""
DISCOVERY_CHOSEN = {
    "2011-06-01": {"item_knn": 0.5, "als": 0.5, "ease": 1.0, "popularity": 0.1},
    "2011-09-01": {"item_knn": 1.0, "als": 0.5, "ease": 1.0, "popularity": 0.1},
    "2011-11-01": {"item_knn": 1.0, "als": 0.5, "ease": 1.0, "popularity": 0.1},
}
"""Production's discovery weights (bench/TIFU.json; buy-again's 1.0 left out: it scores bought products
only, which discovery excludes)."""
TOP_N = 50
"""Text neighbours kept per product."""
CANDIDATES = ("desc_tfidf", "desc_tfidf_cnt", "desc_char", "desc_profile", "tifu_text", "family",
              "desc_new", "family_new", "tifu*desc_tfidf", "tifu*family")
DISCOVERY_CANDIDATES = ("desc_tfidf", "desc_tfidf_cnt", "desc_char", "desc_profile", "tifu_text", "family")


def descriptions(raw: str, cutoff: pd.Timestamp) -> pd.Series:
    """product_id (upper-cased StockCode, as the importer writes it) -> its most frequent description on
    positive-quantity lines with a customer before ``cutoff``."""
    df = pd.read_csv(raw, dtype=str, usecols=["StockCode", "Description", "Quantity", "InvoiceDate",
                                              "CustomerID"])
    ok = (df["CustomerID"].notna() & df["Description"].notna() & (pd.to_numeric(df["Quantity"]) > 0)
          & (pd.to_datetime(df["InvoiceDate"]) < cutoff))
    d = df[ok]
    return (d.assign(code=d["StockCode"].str.upper(), desc=d["Description"].str.strip())
            .groupby(["code", "desc"]).size().reset_index(name="n")
            .sort_values(["code", "n"], ascending=[True, False]).drop_duplicates("code")
            .set_index("code")["desc"])


def top_n(S: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Each row's ``n`` largest entries (the diagonal dropped): a product's nearest products."""
    S = sp.csr_matrix(S)
    S.setdiag(0)
    S.eliminate_zeros()
    rows, cols, vals = [], [], []
    for i in range(S.shape[0]):
        a, b = S.indptr[i], S.indptr[i + 1]
        if b == a:
            continue
        v, c = S.data[a:b], S.indices[a:b]
        k = np.argpartition(-v, min(n, len(v)) - 1)[:n] if len(v) > n else np.arange(len(v))
        rows.append(np.full(len(k), i))
        cols.append(c[k])
        vals.append(v[k])
    if not rows:
        return sp.csr_matrix(S.shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=S.shape)


def content_matrices(desc: pd.Series, data: InteractionData) -> dict[str, sp.csr_matrix]:
    """Product x product similarities (rows: a bought product, columns: the product it suggests) and the
    word TF-IDF matrix (``X_word``), products in ``data``'s order."""
    ids = pd.Index(data.items.ids.astype(str))
    text = desc.reindex(ids).fillna("").to_numpy()
    log.info("descriptions for %d of %d products", int((text != "").sum()), len(text))
    out: dict[str, sp.csr_matrix] = {}
    Xw = TfidfVectorizer(token_pattern=r"(?u)\b[A-Za-z][A-Za-z]+\b", sublinear_tf=True).fit_transform(text)
    out["X_word"] = sp.csr_matrix(Xw)
    out["S_word"] = top_n(Xw @ Xw.T, TOP_N)
    Xc = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(text)
    out["S_char"] = top_n(Xc @ Xc.T, TOP_N)
    stem = pd.Series(ids).str.extract(r"^(\d+)")[0]
    codes, uniq = pd.factorize(stem)
    ok = codes >= 0
    G = sp.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), codes[ok])), shape=(len(ids), len(uniq)))
    F = sp.csr_matrix(G @ G.T)
    F.setdiag(0)
    F.eliminate_zeros()
    out["F"] = F
    log.info("text neighbours: word %d, char %d; family pairs %d (%d products with a sibling)",
             out["S_word"].nnz, out["S_char"].nnz, F.nnz, int((np.diff(F.indptr) > 0).sum()))
    return out


def window(shop: Shop, raw: str, cutoff: pd.Timestamp, end: pd.Timestamp | None, key: str
           ) -> tuple[_Judge, _Judge, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """The all-items and discovery judges of one window, the discovery customers' rows among the
    all-items ones, the normalised component and candidate scores, and CPU seconds spent."""
    tifu_cfg, corrections = CHOSEN[key]
    t0 = time.process_time()
    data = interactions(shop, cutoff)
    buyers = set(data.users.ids[np.asarray(data.purchases.sum(axis=1)).ravel() > 0])
    truth = {u: s for u, s in purchase_truth(shop, cutoff, end).items() if u in buyers}
    judge = _Judge(data, truth, 10, BusinessRules())
    new = new_items_truth(data, truth)
    jnew = _Judge(data, new, 10, DISCOVERY_RULES)
    pos = pd.Series(np.arange(len(judge.users)), index=pd.Index(judge.users, dtype=object))
    new_rows = pos.reindex(pd.Index(jnew.users, dtype=object)).to_numpy()
    assert not np.isnan(new_rows.astype(float)).any()
    config = RecommenderConfig()
    ctx = judge.ctx
    tifu = TIFUKNNRecommender(config, TifuConfig(**tifu_cfg)).fit(data, baskets=build_baskets(shop, data))
    raw_tifu = tifu.score(ctx)
    comps: dict[str, np.ndarray] = {"tifu": normalise_by_max(raw_tifu)}
    for n in sorted(set(corrections) | set(DISCOVERY_CHOSEN[key])):
        comps[n] = normalise(MODELS[n](config).fit(data).score(ctx))
    r = rising(shop, data)
    comps["rising"] = normalise(np.broadcast_to(r, (len(ctx.rows), len(r))).copy())
    t_base = time.process_time() - t0

    t1 = time.process_time()
    m = content_matrices(descriptions(raw, cutoff), data)
    own, _ = tifu.parts(ctx)
    own = sp.csr_matrix(own)
    bought = own.toarray() > 0
    sw = m["S_word"]
    comps["desc_tfidf"] = normalise_by_max((own @ sw).toarray())
    comps["desc_tfidf_cnt"] = normalise_by_max((sp.csr_matrix(ctx.P, dtype=float) @ sw).toarray())
    comps["desc_char"] = normalise_by_max((own @ m["S_char"]).toarray())
    prof = sp.csr_matrix(own @ m["X_word"])
    nrm = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
    prof = sp.diags(1 / np.where(nrm > 0, nrm, 1.0)) @ prof
    comps["desc_profile"] = normalise_by_max((prof @ m["X_word"].T).toarray())
    tt = sp.csr_matrix(np.where(np.isfinite(raw_tifu), raw_tifu, 0.0))
    comps["tifu_text"] = normalise_by_max((tt @ sw).toarray())
    comps["family"] = normalise_by_max((own @ m["F"]).toarray())
    comps["desc_new"] = np.where(bought, 0.0, comps["desc_tfidf"])
    comps["family_new"] = np.where(bought, 0.0, comps["family"])
    t_cand = time.process_time() - t1
    log.info("%s: %d customers (%d with new items), components %s; CPU base %.1f s, candidates %.1f s",
             cutoff.date(), len(judge.users), len(jnew.users), list(comps), t_base, t_cand)
    return judge, jnew, new_rows.astype(np.int64), comps, {"base_cpu_s": round(t_base, 1),
                                                            "candidates_cpu_s": round(t_cand, 1)}


def measure(judge: _Judge, jnew: _Judge, new_rows: np.ndarray, comps: dict[str, np.ndarray], key: str
            ) -> dict[str, np.ndarray]:
    """Per-customer NDCG@10 of the bases and of each base with each candidate at each step (keys
    ``base:name@w``; ``tifu*X``: ``+ w tifu X``), of discovery (``disc:...``), and of item-kNN and each
    content candidate alone (``alone_...``, ``alone_disc_...``)."""
    _, corrections = CHOSEN[key]
    before = comps["tifu"] + sum(w * comps[n] for n, w in corrections.items())
    now = before + RISING_CHOSEN[key] * comps["rising"]
    out = {"tifu": judge.per_customer(np.where(comps["tifu"] > 0, comps["tifu"], -np.inf)),
           "before": judge.per_customer(before), "now": judge.per_customer(now)}
    for bn, base in (("before", before), ("now", now)):
        for n in CANDIDATES:
            extra = comps["tifu"] * comps[n[5:]] if n.startswith("tifu*") else comps[n]
            for w in STEPS:
                out[f"{bn}:{n}@{w}"] = judge.per_customer(base + w * extra)
    for n in ("item_knn", *CANDIDATES[:6]):  # each alone (-inf where it scores nothing), for comparison
        out[f"alone_{n}"] = judge.per_customer(np.where(comps[n] > 0, comps[n], -np.inf))
        c = comps[n][new_rows]
        out[f"alone_disc_{n}"] = jnew.per_customer(np.where(c > 0, c, -np.inf))
    disc = sum(w * comps[n][new_rows] for n, w in DISCOVERY_CHOSEN[key].items())
    out["disc"] = jnew.per_customer(disc)
    for n in DISCOVERY_CANDIDATES:
        for w in STEPS:
            out[f"disc:{n}@{w}"] = jnew.per_customer(disc + w * comps[n][new_rows])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shop", required=True)
    ap.add_argument("--raw", default="../shared/data/online_retail/online_retail.csv.gz")
    ap.add_argument("--cutoff", required=True, choices=[c for c, _ in CUTOFFS])
    ap.add_argument("--out")
    a = ap.parse_args()
    start_logging()
    t0 = time.process_time()
    shop = load_shop(a.shop)
    cutoff = pd.Timestamp(a.cutoff)
    end = dict(CUTOFFS)[a.cutoff]
    res: dict[str, Any] = {"cutoff": a.cutoff, "cpu_s": {}}
    per: dict[str, dict[str, np.ndarray]] = {}
    for key, (c, e) in (("tuning", (cutoff - pd.Timedelta(days=TUNE_DAYS), cutoff)),
                        ("test", (cutoff, pd.Timestamp(end) if end else None))):
        judge, jnew, new_rows, comps, cpu = window(shop, a.raw, c, e, a.cutoff)
        t1 = time.process_time()
        per[key] = measure(judge, jnew, new_rows, comps, a.cutoff)
        cpu["measure_cpu_s"] = round(time.process_time() - t1, 1)
        res["cpu_s"][key] = cpu
        del comps
        res[key] = {n: round(float(v.mean()), 4) for n, v in per[key].items()}
        res[f"{key}_customers"] = [len(judge.users), len(jnew.users)]
    tune = res["tuning"]
    families = sorted({n.split("@")[0] for n in tune if "@" in n})
    res["chosen"] = {}
    for f in families:
        base = f.split(":")[0]
        best = max((n for n in tune if n.startswith(f + "@")), key=lambda n: tune[n])
        row: dict[str, Any] = {"name": best, "tuning_gain": round(tune[best] - tune[base], 4)}
        if tune[best] <= tune[base]:
            row["no_gain"] = True
        else:
            row.update(test=res["test"][best], vs_base=paired_bootstrap(per["test"][best], per["test"][base]))
        res["chosen"][f] = row
    res["now_vs_before"] = paired_bootstrap(per["test"]["now"], per["test"]["before"])
    res["cpu_s"]["total"] = round(time.process_time() - t0, 1)
    emit(res, a.out)


if __name__ == "__main__":
    main()
