"""Fuzz the OpenAPI spec of the running server with schemathesis: no 5xx, ever."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serving.conftest import KEYS, Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
PATHS = {"/recommend", "/similar_items", "/offers", "/offers_batch", "/offers/commit", "/customer_profile",
         "/events", "/echo"}
CRM = {"/offers", "/offers_batch", "/offers/commit", "/customer_profile"}


def test_no_server_errors_on_fuzzed_requests(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    tested, errors, statuses = [], [], []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path not in PATHS:
            continue
        role = "crm" if op.path in CRM else "storefront"
        headers = {"Authorization": f"Bearer {KEYS[role]}"}

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:
            response = case.call(headers=headers, timeout=30)  # noqa: B023
            statuses.append(response.status_code)
            if response.status_code >= 500:
                errors.append(f"{case.path} {response.status_code} {response.text[:200]}")
        run()
        tested.append(op.path)
    assert set(tested) == PATHS
    assert not errors, errors[:5]
    assert statuses.count(200) > 20 and statuses.count(400) > 0  # both valid and invalid inputs were sent
