"""Schema-driven fuzzing of the running server (Ray Serve on 127.0.0.1) from its own OpenAPI document.

schemathesis generates valid and invalid requests for every operation and runs its checks on each
answer: no server error, every status and content type declared, every JSON body (the error model
included) matching its declared schema, headers as declared, invalid data refused. Bounded: a fixed
number of examples per operation, derandomized, no shrinking.

One check is left out: ``positive_data_acceptance`` (any schema-valid body must get a 2xx). The server
refuses some schema-valid bodies on purpose, with a documented 4xx: limits counted in tokens (question,
schema, prompt), cross-field rules (exactly one of schema/database, execute needs database), an
unknown dialect. JSON Schema cannot state those.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import positive_data_acceptance

pytestmark = pytest.mark.ray

EXAMPLES_PER_OPERATION = 15


def test_openapi_document_holds_for_generated_requests(server):
    schema = schemathesis.openapi.from_url(f"{server['base']}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/sql", "POST /v1/chat/completions", "GET /readyz"}
    failures = {}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(
                base_url=server["base"],
                headers=server["headers"],
                excluded_checks=[positive_data_acceptance],
                timeout=90,
            )

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures[op.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
