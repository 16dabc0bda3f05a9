"""The runtime on the trained project: the champion fetched pinned and quietly, no training code loaded,
the cart in a session, unknown categories."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.bundle import COMPONENTS
from serving.champion import fetch_champion
from serving.runtime import COMPILED_DIR, Personaliser
from tests.serving.conftest import customers

pytestmark = pytest.mark.slow  # the trained project
ROOT = Path(__file__).resolve().parents[2]


def test_the_champion_is_fetched_pinned_without_progress_bars(trained_project, tmp_path: Path,
                                                              capfd: pytest.CaptureFixture) -> None:
    d, result = trained_project
    paths, versions = fetch_champion(d, dest=tmp_path)
    assert versions == {c: result.versions[c] for c in COMPONENTS}
    assert all(paths[c].is_file() and paths[c].name == f"{c}.pkl" for c in COMPONENTS)
    out, err = capfd.readouterr()
    assert "Downloading artifacts" not in out + err


def test_serving_the_champion_loads_no_training_code(trained_project) -> None:
    d, _ = trained_project
    code = (f"import sys; from serving.runtime import Personaliser; p = Personaliser({str(d)!r}); "
            "assert p.current is not None, p.load_error; p.close(); "
            "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_product_just_added_to_the_cart_is_not_recommended(personaliser: Personaliser,
                                                               trained_project) -> None:
    """Decided: a product in the cart is not recommended (the storefront shows the cart); what the cart
    suggests is explained as such."""
    p = personaliser
    cid = customers(trained_project, 1)[0]
    pid = p.recommend(cid, 5, None, False, [])["items"][0]["product_id"]
    name = p.current.bundle.engine.names.get(pid, pid)
    for who in (cid, "a-new-visitor"):
        carted = p.recommend(who, 10, None, False, [(pid, "add_to_cart")])["items"]
        assert pid not in [i["product_id"] for i in carted]
        assert [i["rank"] for i in carted] == list(range(1, 11))
        assert not any(i["reason"] == f"because you viewed {name}" for i in carted)
    anon = p.recommend("a-new-visitor", 10, None, False, [(pid, "add_to_cart")])["items"]
    assert any(i["reason"] == f"because you added {name} to your cart" for i in anon)


def test_an_unknown_category_is_a_400_naming_the_known_ones(personaliser: Personaliser,
                                                            trained_project) -> None:
    cid = customers(trained_project, 1)[0]
    for call in (personaliser.recommend, personaliser.recommend_fast):
        with pytest.raises(ValidationError) as err:
            call(cid, 5, "teleporters", False, [])
        (problem,) = err.value.errors()
        assert problem["loc"] == ("category",) and "'teleporters'" in problem["msg"]
        assert "pet" in problem["msg"]
    assert personaliser.recommend(cid, 5, "pet", False, [])["items"]


def test_live_sessions_answered_on_the_loop_equal_the_full_computation(personaliser: Personaliser,
                                                                       trained_project) -> None:
    """``recommend_folded`` (the service answers it on the event loop) gives exactly what ``recommend``
    computes, for customers with live events in memory, with and without exclude_bought and the request's
    own session; it hands back (None) what it cannot fold in."""
    p = personaliser
    who = customers(trained_project, 60)
    products = list(p.current.bundle.engine.product_ids[:40])
    kinds = ["view", "view", "add_to_cart", "wishlist"]
    p.add_events([{"customer_id": c, "product_id": str(products[(i * 7 + j) % len(products)]),
                   "event_type": kinds[(i + j) % len(kinds)]} for i, c in enumerate(who) for j in range(3)])
    as_of = p.current.as_of
    deadline = time.monotonic() + 60
    while any(p.live.recent(c, as_of) is None for c in who):  # the watcher reads them into memory
        assert time.monotonic() < deadline, "the live watcher did not read the events within 60 s"
        time.sleep(0.05)
    request_session = [(str(products[3]), "view")]
    compared = 0
    for c in who:
        for excl in (False, True):
            for sess in ([], request_session):
                folded = p.recommend_folded(c, 10, None, excl, sess)
                assert folded is not None, c
                assert folded == p.recommend(c, 10, None, excl, sess), (c, excl, sess)
                compared += 1
    assert compared == 4 * len(who)
    quiet = customers(trained_project, 300)[-1]
    assert not p.live.has_live(quiet, as_of)
    assert p.recommend_folded(quiet, 10, None, False, []) is None  # nothing to fold in: the cache answers
    assert p.recommend_folded("a-new-visitor", 10, None, False, request_session) is None  # computed in full


def test_the_discovery_reranker_is_compiled_at_load_with_lightgbms_answers(trained_project, small_shop,
                                                                         tmp_path: Path) -> None:
    """A load compiles the discovery re-ranker to machine code, keeps it in the data directory (the next load
    reads it) and predicts with it: discovery answers (sessions folded in) have the items, scores, ranks and
    reasons that LightGBM's predictions give. (Whether the small shop's training learns a re-ranker that beats
    its blend depends on the CPU's floats: the champion is served with one learned on the shop, and a file
    an earlier load compiled for the champion's own is not this one.)"""
    from models.bundle import ServingBundle
    from tests.models.recsys_data import shop_reranker

    d, _ = trained_project
    bundle = ServingBundle.load(fetch_champion(d, dest=tmp_path / "champion")[0])
    bundle.engine.model.attach_reranker(shop_reranker(small_shop))
    bundle.save(tmp_path / "bundle")
    kept_before = set((d / COMPILED_DIR).glob("*.o"))  # the champion's own re-ranker, where it learned one
    loads = [Personaliser(d, tmp_path / "bundle", store_url=f"sqlite:///{tmp_path / f'live{n}.db'}")
             for n in range(2)]
    rrs = [p.current.bundle.engine.model.reranker_ for p in loads]
    assert [rr.compiled_.source if rr is not None and rr.compiled_ is not None else None for rr in rrs] == \
        ["compiled", "cache"]
    assert len(set((d / COMPILED_DIR).glob("*.o")) - kept_before) == 1  # one file, written once, read once
    p, rr = loads[1], rrs[1]
    products = [str(x) for x in p.current.bundle.engine.product_ids[:50]]
    asks = [(c, [(products[i % 50], "view"), (products[(3 * i) % 50], "add_to_cart")])
            for i, c in enumerate(customers(trained_project, 60))]
    compiled = [p.recommend(c, 10, None, True, sess) for c, sess in asks]
    machine_code, rr.compiled_ = rr.compiled_, None
    try:
        assert [p.recommend(c, 10, None, True, sess) for c, sess in asks] == compiled
    finally:
        rr.compiled_ = machine_code
    assert all(a["items"] for a in compiled)
    for p in loads:
        p.close()


def test_a_live_customers_answer_is_kept_until_their_events_change(personaliser: Personaliser,
                                                                   trained_project) -> None:
    """``live_answer`` (a request without session events from a customer with live events) is the full
    computation rendered; asked again with nothing new it is the same bytes, reused (not folded again); after
    the customer's next event it is the new full computation; each request shape is kept apart."""
    import json

    p = personaliser
    renders: list[str] = []

    def render(answer: dict) -> bytes:
        renders.append(answer["customer_id"])
        return json.dumps(answer, sort_keys=True).encode()

    who = customers(trained_project, 80)[60:70]  # not the customers of the other live-session test
    products = [str(x) for x in p.current.bundle.engine.product_ids[:30]]
    p.add_events([{"customer_id": c, "product_id": products[(i * 5 + j) % 30], "event_type": "view"}
                  for i, c in enumerate(who) for j in range(2)])
    as_of = p.current.as_of

    def read_by_the_watcher() -> None:
        deadline = time.monotonic() + 60
        while any(p.live.recent(c, as_of) is None for c in who):
            assert time.monotonic() < deadline, "the live watcher did not read the events within 60 s"
            time.sleep(0.05)

    read_by_the_watcher()
    for c in who:
        for excl in (False, True):
            first = p.live_answer(c, 10, None, excl, render)
            assert first is not None
            assert json.loads(first) == json.loads(json.dumps(p.recommend(c, 10, None, excl, [])))
            n = len(renders)
            assert p.live_answer(c, 10, None, excl, render) is first and len(renders) == n  # kept
    c = who[0]
    before = {excl: p.live_answer(c, 10, None, excl, render) for excl in (False, True)}
    top = json.loads(before[False])["items"][0]["product_id"]
    p.add_events([{"customer_id": c, "product_id": top, "event_type": "add_to_cart"}])  # now in the cart
    read_by_the_watcher()
    for excl in (False, True):
        after = p.live_answer(c, 10, None, excl, render)
        assert after is not None and after != before[excl]
        assert json.loads(after) == json.loads(json.dumps(p.recommend(c, 10, None, excl, [])))
        assert top not in [i["product_id"] for i in json.loads(after)["items"]]
    assert p.live_answer(who[1], 10, None, False, render) is not None  # others still kept
    quiet = customers(trained_project, 300)[-1]
    assert p.live_answer(quiet, 10, None, False, render) is None  # no live events: the cache answers
