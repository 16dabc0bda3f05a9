"""One slice of simulated customers with everything they do: who they are (tastes, price sensitivity,
return habits, buying rate, dropout), their orders and order lines, returns, offer campaigns sent to them
(with a random control group) and their browsing events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema
from features.sim_truth import redeem_prob, true_uplift
from features.sim_world import (
    ACQ,
    CATEGORIES,
    CHANNELS,
    FUTURE_DAYS,
    OFFERS,
    REGION_P,
    REGIONS,
    START,
    WINDOW_DAYS,
    SimConfig,
    sample_days,
)


class CustomerChunk:
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
        ret = np.where(kind == 0, rng.beta(1, 18, n), np.where(kind == 1,
                                                               rng.beta(2, 6, n), rng.beta(9, 2, n)))
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
            schema.CUSTOMER_ID: self.ids,
            "signup_at": START + pd.to_timedelta(signup, unit="D").round("s"),
            "region": np.array(REGIONS, dtype=object)[region],
            "acquisition_channel": np.array(ACQ, dtype=object)[rng.choice(len(ACQ), n,
                                                                          p=[.35, .25, .2, .1, .1])],
            schema.OPTED_OUT: rng.random(n) < 0.03,
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
            day[m] = sample_days(rng, cwv, a[cust[m]], b[cust[m]])
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
            induced.append(pd.DataFrame({"cust": treat[ind],
                                         "day": d + rng.uniform(0, WINDOW_DAYS, ind.sum()),
                                         "offer": offer["id"], "induced": True}))
            # sure things: base orders inside the window redeem the coupon with a customer-specific chance
            win = by_cust[(by_cust["day"] >= d) & (by_cust["day"] < d + WINDOW_DAYS)]
            first = win[win["cust"].isin(treat)].drop_duplicates("cust")
            red = rng.random(len(first)) < redeem_prob(self.sens[first["cust"].to_numpy()])
            redeemed.append(pd.DataFrame({"idx": first.index[red], "offer": offer["id"]}))
            chan = offer["channels"][0]
            logs.append(pd.DataFrame({
                "cust": chosen, schema.OFFER_ID: offer["id"],
                schema.CAMPAIGN_ID: f"camp{ci:02d}_{offer['id']}", "sent_day": d + 0.375, "channel": chan,
                "group": np.where(control, "control", "treatment"), "true_uplift": up,
                "true_base_p": base_p,
            }))
        def cat(xs: list[pd.DataFrame], dtypes: dict[str, str]) -> pd.DataFrame:
            # a run too short for any campaign still gets typed (empty) columns: customer positions stay
            # integers
            if xs:
                return pd.concat(xs, ignore_index=True)
            return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in dtypes.items()})
        return (cat(logs, {"cust": "int64", schema.OFFER_ID: "object", schema.CAMPAIGN_ID: "object",
                           "sent_day": "float64", "channel": "object", "group": "object",
                           "true_uplift": "float64", "true_base_p": "float64"}),
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
            "oi": oi, "cust": cust, "prod": prod, "day": ts_day[oi], schema.QUANTITY: qty.astype(float),
            "unit_price": price, "discount": np.round(disc, 2),
            "channel": np.array(CHANNELS, dtype=object)[chan][oi], "offer": offer,
        })

    def returns(self, lines: pd.DataFrame) -> pd.DataFrame:
        rng = self.rng
        p = self.ret[lines["cust"].to_numpy()]
        r = lines[rng.random(len(lines)) < p].copy()
        r["day"] = r["day"] + rng.uniform(3, 25, len(r))
        r[schema.QUANTITY] = -r[schema.QUANTITY]
        r["is_return"] = True
        return r

    def events(self, lines: pd.DataFrame, end_day: float) -> pd.DataFrame:
        """Funnels: every purchased line was viewed and carted; browse sessions add views and abandoned
        carts."""
        rng = self.rng
        buy = lines[(lines[schema.QUANTITY] > 0) & (lines["day"] < end_day)]
        views_buy = pd.DataFrame({"cust": buy["cust"].to_numpy(), "prod": buy["prod"].to_numpy(),
                                  "day": buy["day"].to_numpy() - rng.uniform(0.002, 0.03, len(buy)),
                                  schema.EVENT_TYPE: "view", "sess": buy["oi"].to_numpy()})
        cart_buy = views_buy.assign(day=views_buy["day"] + 0.001, event_type="add_to_cart")
        # browse sessions (no purchase)
        alive_days = np.clip(np.minimum(self.dropout, end_day) - self.active_from, 0, None)
        n_sess = rng.poisson(self.rate * 1.5 * alive_days / 365.0)
        cust = np.repeat(np.arange(self.n), n_sess)
        sday = sample_days(rng, self.cw, self.active_from[cust], np.minimum(self.dropout, end_day)[cust])
        n_views = 1 + rng.poisson(2.0, len(cust))
        si = np.repeat(np.arange(len(cust)), n_views)
        vc = cust[si]
        u = rng.random(len(si))
        cat_idx = np.minimum((np.cumsum(self.taste[vc], axis=1) < u[:, None]).sum(axis=1),
                             len(CATEGORIES) - 1)
        prod = np.empty(len(si), dtype=int)
        pop = self.cat["_pop"].to_numpy()
        for k, members in enumerate(self.cat_members):
            m = cat_idx == k
            if m.any():
                prod[m] = rng.choice(members, size=int(m.sum()), p=pop[members] / pop[members].sum())
        vday = sday[si] + np.arange(len(si)) % 7 * 0.0005
        browse = pd.DataFrame({"cust": vc, "prod": prod, "day": vday, schema.EVENT_TYPE: "view",
                               "sess": 10**9 + self.lo * 100 + si})
        carted = browse[rng.random(len(browse)) < 0.12]
        carts = carted.assign(day=carted["day"] + 0.001, event_type="add_to_cart")
        removed = carts[rng.random(len(carts)) < 0.25].assign(event_type="remove_from_cart")
        removed = removed.assign(day=removed["day"] + 0.001)
        wish = browse[rng.random(len(browse)) < 0.03].assign(event_type="wishlist")
        ev = pd.concat([views_buy, cart_buy, browse, carts, removed, wish], ignore_index=True)
        return ev[ev["day"] < end_day]
