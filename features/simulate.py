"""A seeded simulator of a whole shop, written in the data contract, with its ground truth.

The simulator plants structure the models must recover and writes it to ``truth/``:

* customers with category tastes, price sensitivity (deal seekers buy only on promotion days),
  return habits (heavy returners send most things back), an individual buying rate and a dropout time
  after which they never buy again (churn);
* a catalogue with categories, brands, prices and costs, replenishable staples people reorder, and
  items going out of stock;
* sessions: views, carts and purchases, abandoned carts, weekly seasonality and a holiday peak;
* offer campaigns sent with a random 10% control group (control rows are logged, nothing is sent);
  the true per-customer uplift of each offer is known, including "sure things" who redeem a coupon
  on an order they would have placed anyway.

Customers are generated in chunks so memory stays bounded at a million customers.

Example
-------
>>> summary = simulate_shop("var/demo/shop", customers=2000, days=365, seed=7)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

log = logging.getLogger(__name__)

CATEGORIES = ["grocery", "beauty", "baby", "pet", "health", "home", "kitchen", "garden", "toys", "books",
              "electronics", "fashion_women", "fashion_men", "shoes", "sports", "stationery"]
REPLENISHABLE_CATEGORIES = {"grocery", "beauty", "baby", "pet", "health"}
CATEGORY_PRICE = {"grocery": 6, "beauty": 18, "baby": 15, "pet": 14, "health": 12, "home": 35, "kitchen": 28,
                  "garden": 30, "toys": 22, "books": 14, "electronics": 90, "fashion_women": 45,
                  "fashion_men": 40, "shoes": 60, "sports": 38, "stationery": 8}
REGIONS = ["london", "north", "south", "east", "west"]
REGION_P = [0.25, 0.2, 0.2, 0.15, 0.2]
ACQ = ["organic", "paid_search", "social", "referral", "affiliate"]
CHANNELS = ["web", "app", "store"]
START = pd.Timestamp("2025-01-01")
FUTURE_DAYS = 120  # simulated past the end for ground truth only (never written to the tables)
WINDOW_DAYS = 14  # an offer's redemption window

OFFERS: list[dict[str, Any]] = [
    {"id": "pct10", "name": "10% off your next order", "kind": "percent_off", "value": 10,
     "channels": ["email", "sms"], "cost_per_send": {"email": 0.01, "sms": 0.05},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 21, "max_per_customer": 6,
     "eligibility": {"min_orders": 1}},
    {"id": "winback20", "name": "We miss you: 20% off", "kind": "win_back", "value": 20,
     "channels": ["sms", "email"], "cost_per_send": {"email": 0.01, "sms": 0.05},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 60, "max_per_customer": 2,
     "eligibility": {"min_orders": 1, "not_bought_in_days": 45}},
    {"id": "freeship", "name": "Free shipping this fortnight", "kind": "free_shipping", "value": 4.0,
     "channels": ["email", "app"], "cost_per_send": {"email": 0.01, "app": 0.0},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 21, "max_per_customer": 6,
     "eligibility": {}},
    {"id": "points2x", "name": "Double loyalty points", "kind": "loyalty_points", "value": 3,
     "channels": ["app", "email"], "cost_per_send": {"email": 0.01, "app": 0.0},
     "redemption_window_days": WINDOW_DAYS, "cooldown_days": 14, "max_per_customer": 8,
     "eligibility": {"min_orders": 2}},
]
# how strongly each offer moves a fully price-sensitive customer (ground truth, not visible to models)
OFFER_EFFECT = {"pct10": 0.55, "winback20": 0.9, "freeship": 0.35, "points2x": 0.12}


@dataclass(frozen=True)
class SimConfig:
    customers: int = 20_000
    products: int = 2_000
    days: int = 365
    seed: int = 42
    chunk: int = 50_000
    control_share: float = 0.1
    campaign_every_days: int = 30
    campaign_reach: float = 0.3
    events: bool = True


def _day_weights(days: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative buying intensity per day (weekday pattern, holiday peak, promotions) and promo flags."""
    dates = pd.date_range(START, periods=days + FUTURE_DAYS, freq="D")
    wd = np.array([0.95, 0.95, 1.0, 1.0, 1.1, 1.15, 1.05])[dates.day_of_week]
    md = dates.month * 100 + dates.day
    holiday = np.where((md >= 1120) & (md <= 1224), 1.8, 1.0)
    promo = np.zeros(len(dates), dtype=bool)
    for start in range(20, days + FUTURE_DAYS, 45):  # a 3-day sale every ~6 weeks
        promo[start:start + 3] = True
    promo |= (dates.month == 11) & (dates.day >= 27) & (dates.day <= 30)  # black friday weekend
    w = wd * holiday * np.where(promo, 1.5, 1.0)
    return w / w.mean(), promo


def _sample_days(rng: np.random.Generator, cw: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling of a day in [a, b) for each row under cumulative weights cw (len days+1)."""
    ia = np.clip(a.astype(int), 0, len(cw) - 1)
    ib = np.clip(np.ceil(b).astype(int), 0, len(cw) - 1)
    lo, hi = cw[ia], cw[ib]
    u = lo + rng.random(len(a)) * np.maximum(hi - lo, 1e-12)
    d = np.searchsorted(cw, u, side="right") - 1
    return np.clip(d, ia, np.maximum(ib - 1, ia)).astype(float) + rng.random(len(a))


def make_catalogue(n: int, rng: np.random.Generator, days: int) -> pd.DataFrame:
    cat = rng.choice(len(CATEGORIES), size=n)
    cat[: min(n, len(CATEGORIES))] = np.arange(min(n, len(CATEGORIES)))  # every category has a product
    price = np.array([CATEGORY_PRICE[CATEGORIES[c]] for c in cat]) * rng.lognormal(0, 0.45, n)
    price = np.asarray(np.round(np.maximum(price, 0.5), 2), dtype=np.float64)
    repl = np.array([CATEGORIES[c] in REPLENISHABLE_CATEGORIES for c in cat]) & (rng.random(n) < 0.6)
    oos = rng.random(n) < 0.04
    oos_day = np.where(oos, rng.integers(max(days - 60, 1), days, n), 10**9)
    brands = np.array([f"brand_{i:02d}" for i in range(60)])
    return pd.DataFrame({
        "product_id": [f"P{i:05d}" for i in range(n)],
        "category": [CATEGORIES[c] for c in cat],
        "brand": brands[rng.integers(0, 60, n)],
        "price": price,
        "unit_cost": np.round(price * rng.uniform(0.35, 0.7, n), 2),
        "in_stock": ~oos,
        "replenishable": repl,
        "_cat": cat,
        "_pop": rng.pareto(1.2, n) + 0.05,
        "_oos_day": oos_day,
    })


class _Chunk:
    """Generates one slice of customers with everything they do."""

    def __init__(self, cfg: SimConfig, cat: pd.DataFrame, lo: int, hi: int, weights: np.ndarray,
                 promo: np.ndarray) -> None:
        self.cfg, self.cat, self.lo, self.n = cfg, cat, lo, hi - lo
        self.rng = np.random.default_rng([cfg.seed, lo])
        self.w, self.promo = weights, promo
        self.cw = np.concatenate([[0.0], np.cumsum(weights)])
        pw = np.where(promo, weights, 0.0)
        self.cw_promo = np.concatenate([[0.0], np.cumsum(pw * weights.sum() / max(pw.sum(), 1e-9))])
        ncat = len(CATEGORIES)
        self.cat_members = [np.flatnonzero(cat["_cat"].to_numpy() == c) for c in range(ncat)]
        self.price = cat["price"].to_numpy()
        self.cost = cat["unit_cost"].to_numpy()
        self.oos_day = cat["_oos_day"].to_numpy()
        self.repl = cat["replenishable"].to_numpy()

    # -- customers -------------------------------------------------------------------------------
    def customers(self) -> pd.DataFrame:
        rng, n, days = self.rng, self.n, self.cfg.days
        ncat = len(CATEGORIES)
        region = rng.choice(len(REGIONS), size=n, p=REGION_P)
        region_pref = np.zeros((len(REGIONS), ncat))
        region_pref[np.arange(len(REGIONS)), rng.choice(ncat, len(REGIONS), replace=False)] = 1.0
        taste = 0.85 * rng.dirichlet(np.full(ncat, 0.25), size=n) + 0.15 * region_pref[region]
        deal = rng.random(n) < 0.12
        sens = np.where(deal, rng.uniform(0.7, 1.0, n), rng.beta(1.3, 3.0, n))
        kind = rng.choice(3, size=n, p=[0.85, 0.10, 0.05])
        ret = np.where(kind == 0, rng.beta(1, 18, n), np.where(kind == 1, rng.beta(2, 6, n), rng.beta(9, 2, n)))
        rate = rng.gamma(1.3, 4.5, n) + 0.3  # orders per year while active
        signup = np.where(rng.random(n) < 0.7, rng.uniform(-730, 0, n), rng.uniform(0, days - 7, n))
        active_from = np.maximum(signup, 0.0)
        life = rng.exponential(np.where(rng.random(n) < 0.35, 120.0, 1500.0))  # fragile vs loyal customers
        dropout = active_from + life
        # staples: replenishable products from the customer's favourite categories
        fav = np.argsort(-taste, axis=1)[:, :2]
        staples = np.full((n, 3), -1)
        for j in range(3):
            c = fav[:, j % 2]
            for k in range(ncat):
                members = self.cat_members[k][self.repl[self.cat_members[k]]]
                rows = np.flatnonzero(c == k)
                if len(members) and len(rows):
                    staples[rows, j] = rng.choice(members, size=len(rows))
        self.taste, self.sens, self.deal, self.ret, self.rate = taste, sens, deal, ret, rate
        self.active_from, self.dropout, self.staples, self.region = active_from, dropout, staples, region
        self.p_rebuy = np.where(staples[:, 0] >= 0, rng.beta(2, 3, n), 0.0)
        self.chan_p = rng.dirichlet([3, 2, 1], size=n)
        self.ids = np.array([f"C{self.lo + i:07d}" for i in range(n)], dtype=object)
        self.lines_mean = rng.uniform(0.6, 2.2, n)
        return pd.DataFrame({
            "customer_id": self.ids,
            "signup_at": START + pd.to_timedelta(signup, unit="D").round("s"),
            "region": np.array(REGIONS, dtype=object)[region],
            "acquisition_channel": np.array(ACQ, dtype=object)[rng.choice(len(ACQ), n, p=[.35, .25, .2, .1, .1])],
            "opted_out": rng.random(n) < 0.03,
        })

    # -- orders ----------------------------------------------------------------------------------
    def base_orders(self) -> pd.DataFrame:
        rng, horizon = self.rng, self.cfg.days + FUTURE_DAYS
        a = self.active_from
        b = np.minimum(self.dropout, horizon)
        mass = np.where(self.deal, self.cw_promo[np.clip(np.ceil(b).astype(int), 0, horizon)] -
                        self.cw_promo[a.astype(int)],
                        self.cw[np.clip(np.ceil(b).astype(int), 0, horizon)] - self.cw[a.astype(int)])
        count = rng.poisson(self.rate / 365.0 * np.maximum(mass, 0))
        cust = np.repeat(np.arange(self.n), count)
        day = np.empty(len(cust))
        is_deal = self.deal[cust]
        for flag, cwv in ((False, self.cw), (True, self.cw_promo)):
            m = is_deal == flag
            day[m] = _sample_days(rng, cwv, a[cust[m]], b[cust[m]])
        return pd.DataFrame({"cust": cust, "day": day, "offer": None, "induced": False})

    def campaigns(self, orders: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Send offers; returns (offer_log rows, induced orders, redemptions of base orders)."""
        rng, cfg = self.rng, self.cfg
        logs, induced, redeemed = [], [], []
        days = list(range(cfg.campaign_every_days, cfg.days - WINDOW_DAYS, cfg.campaign_every_days))
        by_cust = orders.sort_values("day")
        for ci, d in enumerate(days):
            offer = OFFERS[ci % len(OFFERS)]
            eligible = np.flatnonzero(self.active_from < d)
            if not len(eligible):
                continue
            chosen = eligible[rng.random(len(eligible)) < cfg.campaign_reach]
            control = rng.random(len(chosen)) < cfg.control_share
            alive = self.dropout[chosen] > d
            base_p = np.where(alive, 1 - np.exp(-self.rate[chosen] * WINDOW_DAYS / 365.0), 0.0)
            up = true_uplift(offer["id"], self.sens[chosen], base_p, alive, self.rate[chosen])
            treat = chosen[~control]
            ind = rng.random(len(treat)) < up[~control]
            induced.append(pd.DataFrame({"cust": treat[ind], "day": d + rng.uniform(0, WINDOW_DAYS, ind.sum()),
                                         "offer": offer["id"], "induced": True}))
            # sure things: base orders inside the window redeem the coupon with a customer-specific chance
            win = by_cust[(by_cust["day"] >= d) & (by_cust["day"] < d + WINDOW_DAYS)]
            first = win[win["cust"].isin(treat)].drop_duplicates("cust")
            red = rng.random(len(first)) < redeem_prob(self.sens[first["cust"].to_numpy()])
            redeemed.append(pd.DataFrame({"idx": first.index[red], "offer": offer["id"]}))
            chan = offer["channels"][0]
            logs.append(pd.DataFrame({
                "cust": chosen, "offer_id": offer["id"], "campaign_id": f"camp{ci:02d}_{offer['id']}",
                "sent_day": d + 0.375, "channel": chan,
                "group": np.where(control, "control", "treatment"), "true_uplift": up,
                "true_base_p": base_p,
            }))
        def cat(xs: list[pd.DataFrame], dtypes: dict[str, str]) -> pd.DataFrame:
            # a run too short for any campaign still gets typed (empty) columns: customer positions stay integers
            if xs:
                return pd.concat(xs, ignore_index=True)
            return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in dtypes.items()})
        return (cat(logs, {"cust": "int64", "offer_id": "object", "campaign_id": "object", "sent_day": "float64",
                           "channel": "object", "group": "object", "true_uplift": "float64", "true_base_p": "float64"}),
                cat(induced, {"cust": "int64", "day": "float64", "offer": "object", "induced": "bool"}),
                cat(redeemed, {"idx": "int64", "offer": "object"}))

    def lines(self, orders: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        n_lines = 1 + rng.poisson(self.lines_mean[orders["cust"].to_numpy()])
        oi = np.repeat(np.arange(len(orders)), n_lines)
        cust = orders["cust"].to_numpy()[oi]
        day = orders["day"].to_numpy()[oi]
        prod = np.empty(len(oi), dtype=int)
        # category by taste, product by popularity within the category
        u = rng.random(len(oi))
        cat_idx = (np.cumsum(self.taste[cust], axis=1) < u[:, None]).sum(axis=1)
        cat_idx = np.minimum(cat_idx, len(CATEGORIES) - 1)
        pop = self.cat["_pop"].to_numpy()
        for k, members in enumerate(self.cat_members):
            m = cat_idx == k
            if m.any():
                p = pop[members] / pop[members].sum()
                prod[m] = rng.choice(members, size=int(m.sum()), p=p)
        rebuy = rng.random(len(oi)) < self.p_rebuy[cust]
        pick = self.staples[cust, rng.integers(0, 3, len(oi))]
        use = rebuy & (pick >= 0)
        prod[use] = pick[use]
        # out-of-stock items stop selling: redraw from the same category once
        gone = day >= self.oos_day[prod]
        for k, members in enumerate(self.cat_members):
            m = gone & (cat_idx == k)
            live = members[self.oos_day[members] > 10**8]
            if m.any() and len(live):
                prod[m] = rng.choice(live, size=int(m.sum()))
        keep = ~pd.DataFrame({"oi": oi, "p": prod}).duplicated().to_numpy()  # one line per product per order
        oi, cust, day, prod, cat_idx = oi[keep], cust[keep], day[keep], prod[keep], cat_idx[keep]
        qty = 1 + rng.poisson(0.35, len(oi))
        price = self.price[prod]
        promo_day = self.promo[np.clip(day.astype(int), 0, len(self.promo) - 1)]
        disc_rate = np.where(promo_day & ((rng.random(len(oi)) < 0.5) | self.deal[cust]), 0.2,
                             np.where(rng.random(len(oi)) < 0.03, 0.1, 0.0))
        offer = orders["offer"].to_numpy()[oi]
        first_line = np.r_[True, oi[1:] != oi[:-1]]
        gross = qty * price
        disc = gross * disc_rate
        disc = np.where(offer == "pct10", np.maximum(disc, 0.10 * gross), disc)
        disc = np.where(offer == "winback20", np.maximum(disc, 0.20 * gross), disc)
        disc = np.where((offer == "freeship") & first_line, disc + np.minimum(4.0, gross * 0.5), disc)
        disc = np.where(offer == "points2x", disc + 0.03 * gross, disc)
        chan_u = rng.random(len(orders))
        chan = (np.cumsum(self.chan_p[orders["cust"].to_numpy()], axis=1) < chan_u[:, None]).sum(axis=1)
        chan = np.minimum(chan, 2)
        hour = np.clip(rng.normal(14, 4, len(orders)), 0, 23.9) / 24.0
        ts_day = np.floor(orders["day"].to_numpy()) + hour
        return pd.DataFrame({
            "oi": oi, "cust": cust, "prod": prod, "day": ts_day[oi], "quantity": qty.astype(float),
            "unit_price": price, "discount": np.round(disc, 2),
            "channel": np.array(CHANNELS, dtype=object)[chan][oi], "offer": offer,
        })

    def returns(self, lines: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        p = self.ret[lines["cust"].to_numpy()]
        r = lines[rng.random(len(lines)) < p].copy()
        r["day"] = r["day"] + rng.uniform(3, 25, len(r))
        r["quantity"] = -r["quantity"]
        r["is_return"] = True
        return r

    def events(self, lines: pd.DataFrame, end_day: float) -> pd.DataFrame:
        """Funnels: every purchased line was viewed and carted; browse sessions add views and abandoned carts."""
        rng = self.rng
        buy = lines[(lines["quantity"] > 0) & (lines["day"] < end_day)]
        views_buy = pd.DataFrame({"cust": buy["cust"].to_numpy(), "prod": buy["prod"].to_numpy(),
                                  "day": buy["day"].to_numpy() - rng.uniform(0.002, 0.03, len(buy)),
                                  "event_type": "view", "sess": buy["oi"].to_numpy()})
        cart_buy = views_buy.assign(day=views_buy["day"] + 0.001, event_type="add_to_cart")
        # browse sessions (no purchase)
        alive_days = np.clip(np.minimum(self.dropout, end_day) - self.active_from, 0, None)
        n_sess = rng.poisson(self.rate * 1.5 * alive_days / 365.0)
        cust = np.repeat(np.arange(self.n), n_sess)
        sday = _sample_days(rng, self.cw, self.active_from[cust], np.minimum(self.dropout, end_day)[cust])
        n_views = 1 + rng.poisson(2.0, len(cust))
        si = np.repeat(np.arange(len(cust)), n_views)
        vc = cust[si]
        u = rng.random(len(si))
        cat_idx = np.minimum((np.cumsum(self.taste[vc], axis=1) < u[:, None]).sum(axis=1), len(CATEGORIES) - 1)
        prod = np.empty(len(si), dtype=int)
        pop = self.cat["_pop"].to_numpy()
        for k, members in enumerate(self.cat_members):
            m = cat_idx == k
            if m.any():
                prod[m] = rng.choice(members, size=int(m.sum()), p=pop[members] / pop[members].sum())
        vday = sday[si] + np.arange(len(si)) % 7 * 0.0005
        browse = pd.DataFrame({"cust": vc, "prod": prod, "day": vday, "event_type": "view",
                               "sess": 10**9 + self.lo * 100 + si})
        carted = browse[rng.random(len(browse)) < 0.12]
        carts = carted.assign(day=carted["day"] + 0.001, event_type="add_to_cart")
        removed = carts[rng.random(len(carts)) < 0.25].assign(event_type="remove_from_cart")
        removed = removed.assign(day=removed["day"] + 0.001)
        wish = browse[rng.random(len(browse)) < 0.03].assign(event_type="wishlist")
        ev = pd.concat([views_buy, cart_buy, browse, carts, removed, wish], ignore_index=True)
        return ev[ev["day"] < end_day]


def true_uplift(offer_id: str, sens: np.ndarray, base_p: np.ndarray, alive: np.ndarray,
                rate: np.ndarray) -> np.ndarray:
    """True increase in the chance of an order within the redemption window caused by an offer."""
    eff = OFFER_EFFECT[offer_id]
    if offer_id == "points2x":  # loyalty points nudge frequent buyers, regardless of price sensitivity
        resp = 0.3 + 0.7 * np.clip(rate / 12.0, 0, 1)
    else:
        resp = 0.02 + 0.5 * sens**1.5
    up = np.where(alive, eff * resp * (1 - base_p), 0.0)
    if offer_id == "winback20":  # brings a few lapsed customers back
        up = np.where(alive, up, 0.15 * sens**2)
    return np.clip(up, 0, 0.6)


def redeem_prob(sens: np.ndarray) -> np.ndarray:
    """Chance that a customer who buys anyway inside the window uses the coupon."""
    return 0.25 + 0.6 * sens


def offer_cost_on_order(offer_id: str, basket: np.ndarray) -> np.ndarray:
    return {"pct10": 0.10 * basket, "winback20": 0.20 * basket, "freeship": np.minimum(4.0, 0.5 * basket),
            "points2x": 0.03 * basket}[offer_id]


class _Writer:
    """Appends DataFrames to a parquet file chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path, self.w = path, None

    def write(self, df: pd.DataFrame) -> None:
        t = pa.Table.from_pandas(df, preserve_index=False)
        if self.w is None:
            self.w = pq.ParquetWriter(self.path, t.schema)
        else:
            t = t.cast(self.w.schema)
        assert self.w is not None
        self.w.write_table(t)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def simulate_shop(out: str | Path, customers: int = 20_000, days: int = 365, seed: int = 42,
                  products: int = 2_000, events: bool = True, progress: bool = False,
                  chunk: int = 50_000) -> dict[str, Any]:
    """Write a simulated shop to ``out`` (tables + ``offers.yaml``) and its ground truth to ``out/truth``.

    Returns a summary dict (row counts, seconds). Same seed, same arguments -> identical files.
    """
    t0 = time.perf_counter()
    cfg = SimConfig(customers=customers, products=products, days=days, seed=seed, events=events, chunk=chunk)
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights, promo = _day_weights(days)
    cat = make_catalogue(products, rng, days)
    end_day = float(days)
    end_ts = START + pd.Timedelta(days=days)
    cat.drop(columns=["_cat", "_pop", "_oos_day"]).to_parquet(out / "products.parquet", index=False)
    writers = {n: _Writer(out / f"{n}.parquet") for n in ("customers", "orders", "events", "offer_log")}
    writers["truth_customers"] = _Writer(out / "truth" / "customers.parquet")
    writers["truth_uplift"] = _Writer(out / "truth" / "uplift.parquet")
    writers["truth_offer_log"] = _Writer(out / "truth" / "offer_log.parquet")
    counts = {"customers": 0, "orders": 0, "events": 0, "offer_log": 0}
    pid = cat["product_id"].to_numpy()
    starts = range(0, customers, chunk)
    iterator: Any = starts
    if progress:
        from tqdm import tqdm
        iterator = tqdm(starts, desc="simulating", unit="chunk")
    for lo in iterator:
        hi = min(lo + chunk, customers)
        ch = _Chunk(cfg, cat, lo, hi, weights, promo)
        cust_df = ch.customers()
        base = ch.base_orders()
        olog, induced, redeemed = ch.campaigns(base)
        base.loc[redeemed["idx"].to_numpy(), "offer"] = redeemed["offer"].to_numpy()
        orders = pd.concat([base, induced], ignore_index=True).sort_values(["cust", "day"], kind="stable")
        orders = orders.reset_index(drop=True)
        orders["order_id"] = [f"O{lo + c:07d}-{k:04d}" for c, k in
                              zip(orders["cust"].to_numpy(), orders.groupby("cust").cumcount().to_numpy(), strict=True)]
        lines = ch.lines(orders)
        lines["order_id"] = orders["order_id"].to_numpy()[lines["oi"].to_numpy()]
        rets = ch.returns(lines)
        rets["order_id"] = "R" + rets["order_id"].astype(str)
        lines["is_return"] = False
        all_lines = pd.concat([lines, rets], ignore_index=True)
        net = all_lines["quantity"] * all_lines["unit_price"] - np.sign(all_lines["quantity"]) * all_lines["discount"]
        margin = net - all_lines["quantity"] * ch.cost[all_lines["prod"].to_numpy()]
        all_lines["net"], all_lines["margin"] = net, margin
        past = all_lines[all_lines["day"] < end_day]
        fut = all_lines[(all_lines["day"] >= end_day) & (all_lines["day"] < end_day + 90)]
        out_orders = pd.DataFrame({
            "order_id": past["order_id"].to_numpy(), "customer_id": ch.ids[past["cust"].to_numpy()],
            "product_id": pid[past["prod"].to_numpy()],
            "ts": (START + pd.to_timedelta(past["day"].to_numpy(), unit="D")).round("s"),
            "quantity": past["quantity"].to_numpy(), "unit_price": past["unit_price"].to_numpy(),
            "discount": past["discount"].to_numpy(), "channel": past["channel"].to_numpy(),
        }).sort_values(["ts", "order_id"], kind="stable")
        writers["orders"].write(out_orders)
        writers["customers"].write(cust_df)
        # offer log, with redemptions linked to the orders that used the coupon
        olog = olog.copy()
        used = orders[orders["offer"].notna()][["cust", "day", "offer", "order_id"]]
        olog["sent_at"] = (START + pd.to_timedelta(olog["sent_day"].to_numpy(), unit="D")).round("s")
        m = olog.reset_index().merge(used, left_on=["cust", "offer_id"], right_on=["cust", "offer"], how="left")
        m = m[(m["day"] >= m["sent_day"] - 0.375) & (m["day"] < m["sent_day"] + WINDOW_DAYS)
              & (m["group"] == "treatment")].drop_duplicates("index")
        olog["redeemed_at"] = pd.NaT
        olog["order_id"] = None
        olog.loc[m["index"].to_numpy(), "redeemed_at"] = (
            START + pd.to_timedelta(m["day"].to_numpy(), unit="D")).round("s")
        olog.loc[m["index"].to_numpy(), "order_id"] = m["order_id"].to_numpy()
        olog["customer_id"] = ch.ids[olog["cust"].to_numpy().astype(int)] if len(olog) else []
        olog["propensity"] = 1 - cfg.control_share
        writers["offer_log"].write(olog[["customer_id", "offer_id", "campaign_id", "sent_at", "channel", "group",
                                         "redeemed_at", "order_id", "propensity"]])
        writers["truth_offer_log"].write(olog[["customer_id", "campaign_id", "offer_id", "group",
                                               "true_uplift", "true_base_p"]])
        if events:
            ev = ch.events(lines, end_day)
            ev = ev.sort_values(["day"], kind="stable")
            writers["events"].write(pd.DataFrame({
                "customer_id": ch.ids[ev["cust"].to_numpy()], "product_id": pid[ev["prod"].to_numpy()],
                "event_type": ev["event_type"].to_numpy(),
                "ts": (START + pd.to_timedelta(ev["day"].to_numpy(), unit="D")).round("s"),
                "session_id": ("S" + ev["sess"].astype(str)).to_numpy(),
            }))
            counts["events"] += len(ev)
        # ground truth per customer
        fut_by = fut.groupby("cust").agg(net=("net", "sum"), margin=("margin", "sum"))
        fut_orders = orders[(orders["day"] >= end_day) & (orders["day"] < end_day + 90)].groupby("cust").size()
        idx = np.arange(ch.n)
        basket = (lines.assign(v=lines["quantity"] * lines["unit_price"]).groupby("oi")["v"].sum())
        basket_by_cust = basket.groupby(orders["cust"].to_numpy()[basket.index.to_numpy()]).mean()
        exp_basket = basket_by_cust.reindex(idx).fillna(basket.mean() if len(basket) else 30.0).to_numpy()
        alive_end = ch.dropout > end_day
        truth = pd.DataFrame({
            "customer_id": ch.ids,
            "top_category": np.array(CATEGORIES, dtype=object)[np.argmax(ch.taste, axis=1)],
            "price_sensitivity": ch.sens, "deal_seeker": ch.deal, "return_rate": ch.ret,
            "heavy_returner": ch.ret > 0.5, "orders_per_year": ch.rate,
            "dropout_at": START + pd.to_timedelta(np.minimum(ch.dropout, 10 * 365), unit="D"),
            "alive_at_end": alive_end,
            "future_orders_90d": fut_orders.reindex(idx).fillna(0).to_numpy().astype(int),
            "future_net_value_90d": fut_by["net"].reindex(idx).fillna(0.0).to_numpy(),
            "future_margin_90d": fut_by["margin"].reindex(idx).fillna(0.0).to_numpy(),
            "expected_basket": exp_basket,
        })
        truth["future_churn_90d"] = truth["future_orders_90d"] == 0
        writers["truth_customers"].write(truth)
        writers["truth_uplift"].write(uplift_truth(ch.ids, ch.sens, ch.rate, alive_end, exp_basket, ch.ret))
        counts["customers"] += ch.n
        counts["orders"] += len(out_orders)
        counts["offer_log"] += len(olog)
        log.info("simulated customers %d..%d", lo, hi)
    for w in writers.values():
        w.close()
    if not events:
        (out / "events.parquet").unlink(missing_ok=True)
    catalogue = {"offers": [dict(o, valid_from=str(START.date()),
                                 valid_to=str((end_ts + pd.Timedelta(days=365)).date())) for o in OFFERS],
                 "defaults": {"control_share": cfg.control_share, "margin_rate": 0.45}}
    (out / "offers.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    summary = {"config": asdict(cfg), "rows": counts, "end": str(end_ts), "seconds": round(time.perf_counter() - t0, 2)}
    (out / "truth" / "summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    return summary


def uplift_truth(ids: np.ndarray, sens: np.ndarray, rate: np.ndarray, alive: np.ndarray, basket: np.ndarray,
                 ret: np.ndarray) -> pd.DataFrame:
    """Expected incremental margin of each offer for each customer, for a campaign sent at the end."""
    base_p = np.where(alive, 1 - np.exp(-rate * WINDOW_DAYS / 365.0), 0.0)
    margin_rate = 0.45 * (1 - ret)  # returns eat the margin of an induced order
    frames = []
    for o in OFFERS:
        up = true_uplift(o["id"], sens, base_p, alive, rate)
        cost = offer_cost_on_order(o["id"], basket)
        send = min(o["cost_per_send"].values())
        eim = up * (basket * margin_rate - cost) - base_p * redeem_prob(sens) * cost - send
        frames.append(pd.DataFrame({"customer_id": ids, "offer_id": o["id"], "base_p": base_p, "uplift_p": up,
                                    "expected_incremental_margin": eim}))
    return pd.concat(frames, ignore_index=True)
