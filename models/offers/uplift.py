"""Uplift of each offer on P(order within its window), and P(redeem | offer), learned from offer_log
treatment and control groups.

``uplift`` = P(order in window | offer) - P(order in window | no offer), from one LightGBM model (an
S-learner: treatment and offer id as features). Offers without history use the documented prior: uplift
:data:`PRIOR_UPLIFT` and redemption :data:`PRIOR_REDEEM`.

Example
-------
>>> model = UpliftModel().fit(X, offer_ids, treated, bought, redeemed)     # doctest: +SKIP
>>> model.predict(X_now, "pct10")[["uplift", "p_redeem"]]                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from features.customer import CATEGORICAL
from features.exceptions import NotFittedError
from features.schema import DISCOUNT_SHARE, OFFER_ID
from models.customer import ChurnModel, CustomerModelConfig, fit_seeded
from models.offers.campaign_baseline import campaign_offsets, logit, row_offsets, sigmoid
from models.offers.effect_regression import EffectRegressor, customer_folds, propensity, pseudo_outcomes
from models.offers.reasons import DISCOUNT_RESPONSIVE

PRIOR_UPLIFT, PRIOR_REDEEM = 0.01, 0.05
S_LEARNER, TWO_MODELS_DDR = "s_learner", "two_models_ddr"
DR_LEARNER, R_LEARNER = "dr_learner", "r_learner"
LEARNERS = (S_LEARNER, TWO_MODELS_DDR, DR_LEARNER, R_LEARNER)
"""How :class:`UpliftModel` learns the effect (its ``learner``)."""
NO_BASELINE, CAMPAIGN_BASELINE, CAMPAIGN_FEATURE = "none", "campaign", "campaign_feature"
CAMPAIGN_SEGMENT_BASELINE = "campaign_affinity"
BASELINES = (NO_BASELINE, CAMPAIGN_BASELINE, CAMPAIGN_FEATURE, CAMPAIGN_SEGMENT_BASELINE)
"""How :class:`UpliftModel`'s S-learner treats the campaigns' different purchase baselines (its
``baseline``)."""
BASELINE_COLUMN = "campaign_baseline"
"""The feature a :data:`CAMPAIGN_FEATURE` S-learner gets: the row's campaign offset (0 when predicting)."""
DDR_CONTROL = "p_control_model"
"""The feature a :data:`TWO_MODELS_DDR` treatment model gets: the control model's P(order) of the row."""


class UpliftModel:
    """Uplift of each offer on P(order within the window), plus P(redeem | offer).

    An S-learner: LightGBM classifiers over customer features, the offer id and a ``treated`` flag;
    uplift = P(order | treated=1) - P(order | treated=0). Strongly regularised (shallow trees, large
    leaves). On the simulator its uplift ranking agreed with the true uplift better than a T-learner
    (two models), an X-learner, a transformed-outcome or a doubly robust regression (Spearman 0.52 vs
    0.33 / 0.42 / 0.16 / 0.29).

    ``moderators``: features that may change how much an offer works, given to the trees as
    ``treated x feature`` columns (missing when not treated) so that shallow trees can split on the effect
    directly. The default is the customer's discount affinity (share of spend bought on discount): on the
    simulator it raised the Qini on later campaigns from 0.20 to 0.27 (and the true incremental margin at a
    fixed budget by 25%); adding recency, frequency and past redemptions as well lowered the Qini (0.18).

    ``n_models``: the outcome model is fitted that many times with different seeds (each tree sees 80% of
    the rows and features) and the probabilities averaged. The effect is a few points of purchase
    probability in noisy outcomes, so one fit's uplift ranking moves with its seed: on the simulator five
    seeds gave 0.558-0.585 of the oracle's incremental margin, their average 0.590.

    ``learner``: :data:`S_LEARNER` (above) or :data:`TWO_MODELS_DDR`, two models with a dependent data
    representation (scikit-uplift's ``TwoModels(method="ddr_control")``): a control model of P(order) without
    an offer fitted on the control rows, then per offer a model of P(order | offer) on that offer's treatment
    rows with the control model's prediction as an extra feature; uplift = the difference. Its uplift is not
    rescaled (a two-model difference is not shrunk the way an S-learner's is). ``n_models`` seeds of each
    model are averaged; the redemption model is the same for both.

    :data:`DR_LEARNER` / :data:`R_LEARNER` (:mod:`models.offers.effect_regression`) are aimed at the uplift
    itself: the S-learner's outcome models are fitted on half the customers and predict P(order) with and
    without the offer for the other half (two folds, ``n_models`` seeds each), each send becomes a doubly
    robust (or R-learner) pseudo-outcome with the offer's randomised treated share as propensity, and a
    LightGBM regression of it on the features and the offer id (``n_models`` seeds averaged) is the uplift,
    not rescaled (its level is the measured effect). ``p_control`` is the outcome models' average. They rank
    worse than the S-learner wherever measured (``bench/UPLIFT.md``): on the simulator Spearman with the true
    uplift 0.14-0.31 against 0.59, 0.26-0.40 of the oracle against 0.47-0.59; on Hillstrom's training
    halves a Qini 0.10 per 1,000 below production's. Options, not defaults.

    ``baseline`` (the S-learner only; the other learners ignore it): :data:`NO_BASELINE`, or
    :data:`CAMPAIGN_BASELINE`: each campaign's purchase baseline, measured by its own control group with the
    customer mix taken out (:mod:`models.offers.campaign_baseline`), is a log-odds offset the outcome trees
    start from, so that a campaign sent in a busy season does not teach the trees that its customers buy
    more, or that its offer works differently. It needs each row's campaign (``fit``'s ``campaigns``);
    without them, with one campaign, or with campaigns of one shared baseline it is :data:`NO_BASELINE`
    exactly. Predictions are for a campaign of average baseline (offset 0); each offer's scale is measured
    with its own campaigns' offsets. :data:`CAMPAIGN_FEATURE`: the same offsets as a feature of the
    outcome trees (:data:`BASELINE_COLUMN`, 0 when predicting) instead of a fixed shift, so that the trees
    may also let the effect depend on the season. :data:`CAMPAIGN_SEGMENT_BASELINE`: offsets as
    :data:`CAMPAIGN_BASELINE`, measured per campaign within each discount-affinity segment (discount share
    at least :data:`~models.offers.reasons.DISCOUNT_RESPONSIVE` or not, the segments of the measured
    uplift), each centred on its own: a promotion weekend brings back discount-responsive customers more.
    Options, not defaults: on the simulator every variant lowered the shipped policy's share of the oracle
    on both seeds (0.534 / 0.443 -> 0.33-0.51 / 0.26-0.42; ``bench/UPLIFT.md``).
    """

    def __init__(self, config: CustomerModelConfig | None = None,
                 moderators: tuple[str, ...] = ("discount_share",), n_models: int = 5,
                 learner: str = S_LEARNER, baseline: str = NO_BASELINE) -> None:
        if learner not in LEARNERS:
            raise ValueError(f"learner {learner!r} is not one of {list(LEARNERS)}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline {baseline!r} is not one of {list(BASELINES)}")
        self.config = config or CustomerModelConfig(n_estimators=100, learning_rate=0.03, num_leaves=7,
                                                    min_child_samples=200)
        self.moderators = moderators
        self.n_models = n_models
        self.learner = learner
        self.baseline = baseline
        self.offsets_: dict[str, float] = {}
        self.base_score_: float | None = None
        self.control_: list[ChurnModel] = []
        self.treated_: dict[str, list[ChurnModel]] = {}
        self.offers_: set[str] = set()
        self.outcome_: ChurnModel | None = None
        self.outcomes_: list[ChurnModel] = []
        self.redeem_: ChurnModel | None = None
        self.scale_: dict[str, float] = {}
        self.nuisance_: list[list[ChurnModel]] = []
        self.effect_: list[EffectRegressor] = []

    def _frame(self, X: pd.DataFrame, offer_ids: Any, treated: float | np.ndarray) -> pd.DataFrame:
        t = np.broadcast_to(np.asarray(treated, float), (len(X),))
        F = X.assign(**{OFFER_ID: pd.Categorical(np.asarray(offer_ids, dtype=object)), "treated": t})
        for c in getattr(self, "moderators", ()):  # models pickled before moderators existed have none
            if c in X.columns:
                F[f"treated_x_{c}"] = np.where(t > 0, pd.to_numeric(X[c], errors="coerce").to_numpy(float),
                                               np.nan)
        if getattr(self, "baseline", NO_BASELINE) == CAMPAIGN_FEATURE and getattr(self, "offsets_", None):
            F[BASELINE_COLUMN] = 0.0  # a campaign of average baseline
        return F

    def fit(self, X: pd.DataFrame, offer_ids: Any, treated: Any, bought: Any, redeemed: Any,
            campaigns: Any = None) -> UpliftModel:
        """Rows are (customer features at send time, offer, group, outcome); ``campaigns``: each row's
        campaign (read by :data:`CAMPAIGN_BASELINE` only)."""
        if self.n_models < 1:
            raise ValueError(f"n_models must be at least 1, got {self.n_models}")
        t = np.asarray(treated, bool)
        self.offsets_, self.base_score_ = {}, None
        F = self._frame(X, offer_ids, t.astype(float)).reset_index(drop=True)
        cats = [*CATEGORICAL, OFFER_ID]
        self.scale_ = {}
        y, r = np.asarray(bought, float), np.asarray(redeemed, float)
        self.offers_ = set(map(str, offer_ids))
        if self.learner == TWO_MODELS_DDR:
            self._fit_ddr(X.reset_index(drop=True), np.asarray(offer_ids, dtype=object), t, y)
        elif self.learner in (DR_LEARNER, R_LEARNER):
            self._fit_effect(X, np.asarray(offer_ids, dtype=object), t, y, F)
        else:
            offset, init, Fo = None, None, F
            if self.baseline != NO_BASELINE and campaigns is not None:
                offset = self._campaign_offsets(X, t, y, campaigns)
            if offset is not None and self.baseline == CAMPAIGN_FEATURE:
                Fo = F.assign(**{BASELINE_COLUMN: offset})
            elif offset is not None:
                self.base_score_ = float(logit(np.array([y.mean()]))[0])  # where LightGBM would start
                init = self.base_score_ + offset
            self.outcomes_ = [self._model(i) for i in range(self.n_models)]
            fit_seeded(self.outcomes_, Fo, y, init)
            self.outcome_ = self.outcomes_[0]
            self.scale_ = self._calibrate(X, np.asarray(offer_ids, dtype=object), t, y, offset)
        self.redeem_ = ChurnModel(self.config, cats).fit(F[t], r[t])
        return self

    def _campaign_offsets(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray, campaigns: Any
                          ) -> np.ndarray | None:
        """Each row's campaign offset (:data:`CAMPAIGN_BASELINE`, :data:`CAMPAIGN_FEATURE`), with
        :attr:`offsets_` set; None when the campaigns' baselines do not differ. The customer mix is a model
        of P(order) on the customer features alone (every row, the first seed's settings)."""
        camp = np.asarray(campaigns, dtype=object)
        if len(camp) != len(y):
            raise ValueError(f"campaigns has {len(camp)} rows, the uplift rows {len(y)}")
        if len(set(camp[~t].tolist())) < 2:
            return None
        mix = ChurnModel(self.config, list(CATEGORICAL)).fit(X.reset_index(drop=True), y)
        p_mix = mix.predict_matrix(mix.design_matrix(X))
        seg = None
        if self.baseline == CAMPAIGN_SEGMENT_BASELINE and DISCOUNT_SHARE in X.columns:
            share = pd.to_numeric(X[DISCOUNT_SHARE], errors="coerce").fillna(0).to_numpy(float)
            seg = np.where(share >= DISCOUNT_RESPONSIVE, "discount-responsive", "other")
        offsets = campaign_offsets(p_mix, camp, t, y, seg)
        if not offsets:
            return None
        self.offsets_ = offsets
        return row_offsets(offsets, camp, seg)

    def _model(self, i: int) -> ChurnModel:
        return ChurnModel(replace(self.config, seed=self.config.seed + i), [*CATEGORICAL, OFFER_ID])

    def _fit_ddr(self, X: pd.DataFrame, oid: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        """The control model on the control rows, then one treatment model per offer on its treatment rows
        with the control model's prediction as :data:`DDR_CONTROL`."""
        self.control_ = [self._model(i).fit(X[~t], y[~t]) for i in range(self.n_models)]
        self.outcome_ = self.control_[0]
        p0 = self._control(X)
        self.treated_ = {}
        for o in sorted(self.offers_):
            m = t & (oid == o)
            if m.any():
                Xo = X[m].assign(**{DDR_CONTROL: p0[m]})
                self.treated_[o] = [self._model(i).fit(Xo, y[m]) for i in range(self.n_models)]

    def _fit_effect(self, X: pd.DataFrame, oid: np.ndarray, t: np.ndarray, y: np.ndarray, F: pd.DataFrame
                    ) -> None:
        """Cross-fitted outcome models, pseudo-outcomes, their regression (:data:`DR_LEARNER`,
        :data:`R_LEARNER`)."""
        fold = customer_folds(X.index, 2, self.config.seed)
        mu1, mu0 = np.zeros(len(y)), np.zeros(len(y))
        self.nuisance_ = []
        for f in (0, 1):
            train, held = fold != f, fold == f
            if not train.any() or not held.any():
                continue
            models = [self._model(i).fit(F[train], y[train]) for i in range(self.n_models)]
            self.nuisance_.append(models)
            mu1[held], mu0[held] = self._probabilities(self._frame(X[held], oid[held], 1.0), models)
        if len(self.nuisance_) < 2:  # one customer only: no held-out fold
            raise ValueError("the DR/R-learner needs sends to at least two customers")
        self.outcome_ = self.nuisance_[0][0]
        kind = "dr" if self.learner == DR_LEARNER else "r"
        target, weight = pseudo_outcomes(kind, t, y, propensity(oid, t), mu1, mu0)
        keep = weight > 0
        G = X[keep].assign(**{OFFER_ID: pd.Categorical(oid[keep])})
        cats = [*CATEGORICAL, OFFER_ID]
        self.effect_ = [EffectRegressor(replace(self.config, seed=self.config.seed + i), cats)
                        .fit_weighted(G, target[keep], None if kind == "dr" else weight[keep])
                        for i in range(self.n_models)]

    def _effect_probabilities(self, X: pd.DataFrame, offer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(order) with each row's offer (control + regressed effect) and without one (:data:`DR_LEARNER`,
        :data:`R_LEARNER`): the control probability averaged over the cross-fitted outcome models."""
        F = self._frame(X, offer_ids, 1.0)
        p0 = np.mean([self._probabilities(F, models)[1] for models in self.nuisance_], axis=0)
        G = X.assign(**{OFFER_ID: pd.Categorical(offer_ids)})
        M = self.effect_[0].design_matrix(G)
        tau = np.mean([m.predict_matrix(M) for m in self.effect_], axis=0)
        return p0 + tau, p0

    def _control(self, X: pd.DataFrame) -> np.ndarray:
        """P(order without an offer) from the control models (:data:`TWO_MODELS_DDR`)."""
        M = self.control_[0].design_matrix(X)
        return np.mean([m.predict_matrix(M) for m in self.control_], axis=0)  # type: ignore[no-any-return]

    def _ddr_probabilities(self, X: pd.DataFrame, offer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(order) with each row's offer and without one (:data:`TWO_MODELS_DDR`); an offer that had no
        treatment rows gets no effect."""
        p0 = self._control(X)
        p1 = p0.copy()
        for o in np.unique(offer_ids):
            m = offer_ids == o
            models = self.treated_.get(str(o))
            if models:
                M = models[0].design_matrix(X[m].assign(**{DDR_CONTROL: p0[m]}))
                p1[m] = np.mean([mm.predict_matrix(M) for mm in models], axis=0)
        return p1, p0

    def _calibrate(self, X: pd.DataFrame, oid: np.ndarray, t: np.ndarray, y: np.ndarray,
                   offset: np.ndarray | None = None) -> dict[str, float]:
        """The size of each offer's effect: an S-learner ranks well but shrinks uplift towards zero, so each
        offer's predicted uplift is scaled to match the average effect measured by its randomised control
        group (predicted with each row's campaign ``offset``, where the effect was measured)."""
        scale: dict[str, float] = {}
        for o in self.offers_:
            m = oid == o
            if m.sum() == 0 or t[m].all() or not t[m].any():
                continue
            ate = y[m & t].mean() - y[m & ~t].mean()
            F = self._frame(X.iloc[np.flatnonzero(m)], oid[m], 1.0)
            if offset is not None and self.baseline == CAMPAIGN_FEATURE:
                F[BASELINE_COLUMN], offset_m = offset[m], None
            else:
                offset_m = None if offset is None else offset[m]
            p1, p0 = self._probabilities(F, offset=offset_m)
            pred = (p1 - p0).mean()
            scale[o] = float(np.clip(ate / pred, 0.0, 10.0)) if pred > 1e-6 and ate > 0 else 1.0
        return scale

    def _probabilities(self, F: pd.DataFrame, models: list[ChurnModel] | None = None,
                       offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """P(order) treated and not treated for the rows of a treated frame, averaged over the outcome models
        (``models``, default the S-learner's: fitted on the same frame, so they share one design matrix).
        Outcome models fitted from campaign offsets (:data:`CAMPAIGN_BASELINE`) predict at the rows'
        ``offset`` (default 0: a campaign of average baseline)."""
        if models is None:
            assert self.outcome_ is not None
            models = getattr(self, "outcomes_", None) or [self.outcome_]  # pickles from before bagging: one
        M1 = models[0].design_matrix(F)
        M0 = M1.copy()
        names = models[0].feature_names
        M0[:, names.index("treated")] = 0.0
        for j, col in enumerate(names):
            if col.startswith("treated_x_"):
                M0[:, j] = np.nan
        p1, p0 = np.zeros(len(F)), np.zeros(len(F))
        base = getattr(self, "base_score_", None)  # pickles from before the baseline option: none
        if base is not None:  # set by the S-learner only, whose outcome models these are
            shift = base + (0.0 if offset is None else offset)
            for m in models:
                p1 += sigmoid(m.raw_matrix(M1) + shift)
                p0 += sigmoid(m.raw_matrix(M0) + shift)
            return p1 / len(models), p0 / len(models)
        for m in models:
            p1 += m.predict_matrix(M1)
            p0 += m.predict_matrix(M0)
        return p1 / len(models), p0 / len(models)

    def predict_pairs(self, X: pd.DataFrame, offer_ids: np.ndarray) -> pd.DataFrame:
        """uplift, p_treated, p_control, p_redeem and ``prior`` for rows that each name their own offer (the
        documented prior for an offer with no history)."""
        if self.outcome_ is None:
            raise NotFittedError("UpliftModel")
        offer_ids = np.asarray(offer_ids, dtype=object)
        n = len(X)
        up, pr = np.full(n, PRIOR_UPLIFT), np.full(n, PRIOR_REDEEM)
        pt, pc = np.full(n, np.nan), np.full(n, np.nan)
        known = np.isin(offer_ids, list(self.offers_))
        if known.any():
            F = self._frame(X[known], offer_ids[known], 1.0)
            learner = getattr(self, "learner", S_LEARNER)
            if learner == TWO_MODELS_DDR:
                p1, p0 = self._ddr_probabilities(X[known], offer_ids[known])
            elif learner in (DR_LEARNER, R_LEARNER):
                p1, p0 = self._effect_probabilities(X[known], offer_ids[known])
            else:
                p1, p0 = self._probabilities(F)
            scale = np.array([getattr(self, "scale_", {}).get(o, 1.0) for o in offer_ids[known]])
            up[known] = (p1 - p0) * scale
            pc[known] = p0
            pt[known] = p0 + up[known]
            assert self.redeem_ is not None
            pr[known] = self.redeem_.predict(F).to_numpy()
        return pd.DataFrame({"uplift": up, "p_treated": pt, "p_control": pc, "p_redeem": pr, "prior": ~known},
                            index=X.index)

    def predict(self, X: pd.DataFrame, offer_id: str) -> pd.DataFrame:
        """uplift, p_treated, p_control, p_redeem per customer for one offer (prior if no history)."""
        return self.predict_pairs(X, np.full(len(X), offer_id, dtype=object))
