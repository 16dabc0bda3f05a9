"""Next-best offer: the catalogue, eligibility and contact rules, uplift scoring, decisions that name the rule
that decided, budgeted audiences, control groups and measurement.

Modules, each one concern:

- :mod:`~models.offers.catalogue`: ``offers.yaml`` -> :class:`Offer`, :class:`OfferCatalogue`
- :mod:`~models.offers.eligibility`: eligibility rules, contact rules (caps, cooldowns), the control group
- :mod:`~models.offers.uplift`: :class:`UpliftModel` (uplift and P(redeem) per customer and offer)
- :mod:`~models.offers.policy`: :class:`OfferPolicy` (score, decide; recording is the caller's job)
- :mod:`~models.offers.reasons`: the :class:`Rule` codes and readable reasons of decisions
- :mod:`~models.offers.audience`: :func:`choose_audience` within budgets and caps, and its exact optimum
- :mod:`~models.offers.measurement`: measured uplift, Qini, off-policy estimators (IPS, doubly robust)

Pickled bundles name ``models.offers.<Class>`` for the classes saved before this package existed; the
re-exports below keep them loadable.
"""

from models.offers.audience import GreedyResult, choose_audience, greedy, optimal_audience_value
from models.offers.catalogue import (
    ELIGIBILITY_KEYS,
    KINDS,
    Caps,
    Offer,
    OfferCatalogue,
    check_attribute_rules,
    parse_catalogue,
)
from models.offers.eligibility import (
    ContactHistory,
    ContactRules,
    contact_blocks,
    contact_history,
    customer_blocks,
    eligibility_failures,
    eligible,
    in_control_group,
)
from models.offers.measurement import (
    doubly_robust,
    ips,
    mean_ci,
    measure_uplift,
    qini,
    shared_control_weights,
)
from models.offers.policy import (
    CANDIDATE_COLUMNS,
    DECISION_COLUMNS,
    RECORD_COLUMNS,
    OfferPolicy,
    sends_to_record,
)
from models.offers.reasons import DISCOUNT_RESPONSIVE, TRIGGER_PREFERENCE, Rule, reason_text, reasons_for
from models.offers.uplift import PRIOR_REDEEM, PRIOR_UPLIFT, UpliftModel

__all__ = [
    "CANDIDATE_COLUMNS", "DECISION_COLUMNS", "DISCOUNT_RESPONSIVE", "ELIGIBILITY_KEYS", "KINDS",
    "PRIOR_REDEEM", "PRIOR_UPLIFT", "RECORD_COLUMNS", "TRIGGER_PREFERENCE", "Caps", "ContactHistory",
    "ContactRules", "GreedyResult", "Offer", "OfferCatalogue", "OfferPolicy", "Rule", "UpliftModel",
    "check_attribute_rules", "choose_audience", "contact_blocks", "contact_history", "customer_blocks",
    "doubly_robust",
    "eligibility_failures", "eligible", "greedy", "in_control_group", "ips", "mean_ci", "measure_uplift",
    "optimal_audience_value", "parse_catalogue", "qini", "reason_text", "reasons_for", "sends_to_record",
    "shared_control_weights",
]
