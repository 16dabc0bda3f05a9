"""What a storefront session changes in an answer: the cart.

- A product in the customer's cart (added, and neither removed nor bought since) is **not recommended**:
  the storefront shows the cart already, and the list makes room for the next product instead. Once
  removed from the cart it may come back like any other product.
- A product recommended because of one in the cart says so: "because you added X to your cart" (the
  models' reasons know interactions, not event types, and would say "because you viewed X").

The session is the customer's live events since the models' data end, oldest first, followed by the
request's own ``session_events``. A known customer's session is folded into the stored rows with numpy
(:mod:`serving.fold_in`, the same answer as the engine's full computation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.recsys import BusinessRules, Recommendation, RecommendationEngine
from serving import fold_in

Session = list[tuple[str, str]]


def in_cart(session: Session) -> list[str]:
    """The products in the cart after the session's events, in the order they were added."""
    cart: dict[str, None] = {}
    for pid, event in session:
        if event == "add_to_cart":
            cart[pid] = None
        elif event in ("remove_from_cart", "purchase"):
            cart.pop(pid, None)
    return list(cart)


def cart_reasons(items: list[dict[str, Any]], cart: list[str], name: Callable[[str], str]
                 ) -> list[dict[str, Any]]:
    """``items`` with "because you viewed X" said as "because you added X to your cart" for every X in
    the cart."""
    added = {f"because you viewed {name(pid)}": f"because you added {name(pid)} to your cart" for pid in cart}
    return [{**i, "reason": added.get(i["reason"], i["reason"])} for i in items]


def recommend_in_session(engine: RecommendationEngine, customer_id: str, k: int, rules: BusinessRules,
                         session: Session, region: str | None) -> Recommendation:
    """The engine's answer for a customer in a session: without the products in the cart, ranks 1..k, and
    reasons that name the cart."""
    folded = folded_in_session(engine, customer_id, k, rules, session)
    if folded is not None:
        return folded
    # not a known customer, or nothing to fold in with numpy: computed in full
    cart = in_cart(session)
    rec = engine.recommend_one(customer_id, k=k + len(cart), rules=rules, session=session or None,
                               region=region)
    return _without_cart(engine, rec, cart, k)


def folded_in_session(engine: RecommendationEngine, customer_id: str, k: int, rules: BusinessRules,
                      session: Session) -> Recommendation | None:
    """:func:`recommend_in_session` when the fold-in alone answers it (a known customer, a non-empty
    session), else None: a millisecond of numpy, cheap enough for the event loop."""
    if not session:
        return None
    cart = in_cart(session)
    rec = fold_in.recommend(engine, customer_id, k + len(cart), rules, session)
    if rec is None or not cart:  # nothing in the cart: the fold-in's k items, ranked 1..k, as they are
        return rec
    return _without_cart(engine, rec, cart, k)


def _without_cart(engine: RecommendationEngine, rec: Recommendation, cart: list[str], k: int
                  ) -> Recommendation:
    """``rec`` (k + len(cart) items) without the products in the cart, ranks 1..k, reasons naming the cart."""
    keep = set(cart)
    items = [i for i in rec.items if i["product_id"] not in keep][:k]
    items = [{**i, "rank": r} for r, i in enumerate(items, 1)]
    if cart:
        items = cart_reasons(items, cart, lambda pid: engine.names.get(pid, pid))
    return Recommendation(rec.customer_id, rec.source, items)
