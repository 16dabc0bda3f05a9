"""The runtime on the trained project: the champion fetched pinned and quietly, no training code loaded,
the cart in a session, unknown categories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.bundle import COMPONENTS
from serving.champion import fetch_champion
from serving.runtime import Personaliser
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
