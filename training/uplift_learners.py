"""Uplift learners for several offers sharing one control group, all on the same LightGBM base settings.

Every learner has ``fit(X, arm, y) -> self`` and ``predict(X) -> DataFrame`` (one column per offer: the
predicted effect of that offer against no offer, in the outcome's units). ``arm`` holds ``"control"`` or an
offer id per row.

* :class:`SLearner` - the production learner (``models.offers.UpliftModel``) re-implemented here because its
API
  takes the CRM features and offer_log frames: one model over the features, the offer id and a ``treated``
  flag, fitted on offer_log rows (a shared control customer is one row per offer, as the importer writes
  them), with ``treated x feature`` moderator columns, several seeds averaged and each offer's uplift scaled
  to its measured average effect. Same LightGBM parameters as production (:class:`Base`).
* Peers a user would pick instead, one binary model per offer against the control rows: scikit-uplift's
  ``SoloModel`` (S-learner), ``TwoModels`` (T-learner, and its dependent-data variant ``ddr_control``),
  ``ClassTransformation`` / ``ClassTransformationReg`` (transformed outcome), and an X-learner written here
  with LightGBM (scikit-uplift has none). :class:`RandomScores` is the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import schema

CONTROL = "control"


@dataclass(frozen=True)
class Base:
    """LightGBM settings shared by every learner: production's uplift settings (models.offers.UpliftModel with
    the train job's CustomerModelConfig: 100 trees, rate 0.03, 7 leaves, 200 rows per leaf; 80% rows and
    features per tree, L2 1.0)."""

    n_estimators: int = 100
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_child_samples: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    tweedie_variance_power: float = 1.3
    seed: int = 42
    num_threads: int = 1
    """Production uses 2; with ``deterministic`` the result does not depend on it, and one thread per fit is
    much faster on a shared, loaded machine (OpenMP threads wait on each other)."""

    def params(self, objective: str, seed: int | None = None) -> dict[str, Any]:
        p = {"objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
             "min_child_samples": self.min_child_samples, "seed": self.seed if seed is None else seed,
             "deterministic": True, "num_threads": self.num_threads, "verbose": -1,
             "feature_fraction": self.feature_fraction, "bagging_fraction": self.bagging_fraction,
             "bagging_freq": 1, "lambda_l2": self.lambda_l2}
        if objective == "tweedie":
            p["tweedie_variance_power"] = self.tweedie_variance_power
        return p

    def sklearn(self, objective: str, seed: int | None = None) -> Any:
        """The same settings as a scikit-learn estimator (classifier for ``binary``), for scikit-uplift."""
        p = self.params(objective, seed)
        p.pop("bagging_freq"), p.pop("seed")
        kw = {"n_estimators": self.n_estimators, "random_state": self.seed if seed is None else seed,
              "subsample_freq": 1, **p}
        return lgb.LGBMClassifier(**kw) if objective == "binary" else lgb.LGBMRegressor(**kw)


def outcome_objective(y: np.ndarray) -> str:
    """``binary`` for 0/1 outcomes (conversion), else ``tweedie`` (spend: many zeros, a long tail) - the
    objectives of production's churn and value models."""
    return "binary" if np.isin(np.unique(y), [0.0, 1.0]).all() else "tweedie"


@dataclass
class SLearner:
    """Production's uplift learner (see the module docstring); ``moderators``: feature columns also given as
    ``treated x feature`` (missing when untreated); ``n_models`` seeds averaged; ``scale``: each offer's mean
    predicted uplift is scaled to the effect its control group measured.

    ``treatment``: how the model sees the treatment. ``"offer_id"`` (production): the offer id as a category
    and one ``treated`` flag, a shared control customer once per offer. ``"flags"``: one 0/1 column
    ``treated_<offer>`` per offer and each customer once (a control customer has every flag 0), so a tree
    reaches one offer's effect with one split instead of two (``treated``, then ``offer_id``)."""

    base: Base = field(default_factory=Base)
    moderators: tuple[str, ...] = ()
    n_models: int = 5
    scale: bool = True
    treatment: str = schema.OFFER_ID
    offers_: list[str] = field(default_factory=list)
    boosters_: list[lgb.Booster] = field(default_factory=list)
    scale_: dict[str, float] = field(default_factory=dict)

    def _frame(self, X: pd.DataFrame, offer: np.ndarray, treated: np.ndarray) -> pd.DataFrame:
        if self.treatment == "flags":
            F = X.reset_index(drop=True).assign(
                **{f"treated_{o}": ((offer == o) & (treated > 0)).astype(float) for o in self.offers_}
            )
        else:
            F = X.reset_index(drop=True).assign(offer_id=pd.Categorical(offer,
                                                                        categories=self.offers_),
                                                treated=treated)
        for c in self.moderators:
            F[f"treated_x_{c}"] = np.where(treated > 0, pd.to_numeric(X[c]).to_numpy(float), np.nan)
        return F

    def fit(self, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray) -> SLearner:
        arm, y = np.asarray(arm, dtype=object), np.asarray(y, float)
        self.offers_ = sorted(set(arm) - {CONTROL})
        ctrl = np.flatnonzero(arm == CONTROL)
        treat = np.flatnonzero(arm != CONTROL)
        copies = 1 if self.treatment == "flags" else len(self.offers_)  # offer_log: one control row per offer
        rows = np.concatenate([treat, np.tile(ctrl, copies)])
        offer = np.concatenate([arm[treat], np.repeat(self.offers_, len(ctrl)) if copies > 1 else arm[ctrl]])
        treated = (np.arange(len(rows)) < len(treat)).astype(float)
        F, target = self._frame(X.iloc[rows], offer, treated), y[rows]
        obj = outcome_objective(y)
        self.boosters_ = [lgb.train(self.base.params(obj, self.base.seed + i), lgb.Dataset(F, target),
                                    num_boost_round=self.base.n_estimators) for i in range(self.n_models)]
        self.scale_ = {}
        if self.scale:
            raw = self._uplift(X)
            for o in self.offers_:
                ate = y[arm == o].mean() - y[arm == CONTROL].mean()
                pred = raw[o][(arm == o) | (arm == CONTROL)].mean()
                self.scale_[o] = float(np.clip(ate / pred, 0.0, 10.0)) if pred > 1e-6 and ate > 0 else 1.0
        return self

    def _uplift(self, X: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for o in self.offers_:
            F1 = self._frame(X, np.full(len(X), o, dtype=object), np.ones(len(X)))
            F0 = self._frame(X, np.full(len(X), o, dtype=object), np.zeros(len(X)))
            out[o] = np.mean([np.asarray(b.predict(F1)) - np.asarray(b.predict(F0)) for b in self.boosters_],
                             axis=0)
        return pd.DataFrame(out, index=X.index)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        u = self._uplift(X)
        return u * pd.Series({o: self.scale_.get(o, 1.0) for o in self.offers_})


class Production:
    """The shipped :class:`models.offers.UpliftModel` itself (``learner``: its ``S_LEARNER`` or
    ``TWO_MODELS_DDR``), fitted on offer_log rows as the train job fits it: a treatment row per treated
    customer, a shared control customer once per offer. It models P(order), so it is fitted on 0/1 outcomes
    only (:attr:`binary_only`); the redemption model it also fits sees no redemptions here."""

    binary_only = True

    def __init__(self, base: Base, learner: str, n_models: int = 5) -> None:
        from models.customer import CustomerModelConfig
        from models.offers import UpliftModel
        cfg = CustomerModelConfig(n_estimators=base.n_estimators, learning_rate=base.learning_rate,
                                  num_leaves=base.num_leaves, min_child_samples=base.min_child_samples,
                                  seed=base.seed, num_threads=base.num_threads)
        self.model = UpliftModel(cfg, n_models=n_models, learner=learner)
        self.offers_: list[str] = []

    def fit(self, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray) -> Production:
        arm, y = np.asarray(arm, dtype=object), np.asarray(y, float)
        if outcome_objective(y) != "binary":
            raise ValueError("Production models P(order): fit it on a 0/1 outcome")
        self.offers_ = sorted(set(arm) - {CONTROL})
        ctrl, treat = np.flatnonzero(arm == CONTROL), np.flatnonzero(arm != CONTROL)
        rows = np.concatenate([treat, np.tile(ctrl, len(self.offers_))])
        offer = np.concatenate([arm[treat], np.repeat(self.offers_, len(ctrl))])
        treated = np.arange(len(rows)) < len(treat)
        self.model.fit(X.iloc[rows], offer, treated, y[rows], np.zeros(len(rows)))
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({o: self.model.predict(X, o)["uplift"].to_numpy() for o in self.offers_},
                            index=X.index)


class PerOffer:
    """One binary-treatment uplift model per offer (that offer's rows against the control rows)."""

    def __init__(self, make: Any) -> None:
        self.make = make  # (objective) -> a fresh model with fit(X, y, treatment) and predict(X)
        self.models_: dict[str, Any] = {}

    def fit(self, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray) -> PerOffer:
        arm, y = np.asarray(arm, dtype=object), np.asarray(y, float)
        obj = outcome_objective(y)
        for o in sorted(set(arm) - {CONTROL}):
            m = (arm == o) | (arm == CONTROL)
            self.models_[o] = self.make(obj).fit(X[m], y[m], (arm[m] == o).astype(int))
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({o: np.asarray(m.predict(X),
                                           float) for o, m in self.models_.items()}, index=X.index)


class XLearner:
    """Künzel et al.'s X-learner with LightGBM: outcome models per group, imputed effects regressed on the
    features in each group, combined with the treated share as weight."""

    def __init__(self, base: Base, objective: str) -> None:
        self.base, self.objective = base, objective

    def fit(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray) -> XLearner:
        t = np.asarray(t, bool)
        mu0 = self.base.sklearn(self.objective).fit(X[~t], y[~t])
        mu1 = self.base.sklearn(self.objective).fit(X[t], y[t])
        d1 = y[t] - _mean(mu0, X[t])
        d0 = _mean(mu1, X[~t]) - y[~t]
        self.tau1_ = self.base.sklearn("regression").fit(X[t], d1)
        self.tau0_ = self.base.sklearn("regression").fit(X[~t], d0)
        self.g_ = float(t.mean())
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.g_ * self.tau0_.predict(X) + (1 - self.g_) * self.tau1_.predict(X)


def _mean(model: Any, X: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else model.predict(X)


class RandomScores:
    """Uniform random scores: the ranking every learner must beat."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.offers_: list[str] = []

    def fit(self, X: pd.DataFrame, arm: np.ndarray, y: np.ndarray) -> RandomScores:
        self.offers_ = sorted(set(np.asarray(arm, dtype=object)) - {CONTROL})
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        return pd.DataFrame({o: rng.random(len(X)) for o in self.offers_}, index=X.index)


def peers(base: Base, seed: int) -> dict[str, Any]:
    """The standard learners, unfitted, by name. Transformed outcome uses scikit-uplift's classifier form on
    0/1 outcomes and its regression form (known propensity: the treated share) on amounts."""
    from sklift.models import ClassTransformation, ClassTransformationReg, SoloModel, TwoModels

    def two(method: str) -> Any:
        return PerOffer(lambda obj: TwoModels(base.sklearn(obj), base.sklearn(obj), method=method))

    def transformed(obj: str) -> Any:
        if obj == "binary":
            return ClassTransformation(base.sklearn("binary"))
        return _KnownPropensity(ClassTransformationReg(base.sklearn("regression"), propensity_val=0.5))

    return {
        "sklift_solo": PerOffer(lambda obj: SoloModel(base.sklearn(obj), method="dummy")),
        "sklift_two_models": two("vanilla"),
        "sklift_two_models_ddr": two("ddr_control"),
        "sklift_class_transformation": PerOffer(transformed),
        "x_learner": PerOffer(lambda obj: XLearner(base, obj)),
        "random": RandomScores(seed),
    }


class _KnownPropensity:
    """ClassTransformationReg with the propensity set to the treated share of the rows it is fitted on."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray) -> _KnownPropensity:
        self.model.propensity_val = float(np.mean(t))
        self.model.fit(X, y, t)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict(X)
