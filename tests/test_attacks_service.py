"""The service family of the attack suite: a hostile owner's requests are refused by the
service's own checks (ownership of job inputs, safe party names, RFC 9421
request signatures over the raw target, single-use nonces, the body's Content-Digest, a chip log batch attributed as a whole by its checkpoint)."""

from __future__ import annotations

import pytest

from computewatch.adversary.suite import Context, run_attack


@pytest.mark.parametrize("name", ["service-job-names-another-owners-inputs", "service-party-name-leaves-its-folder",
                                  "service-request-target-altered", "service-signed-read-replayed",
                                  "service-upload-body-swapped", "service-batch-forged-entry"])
def test_service_attacks_are_caught(name: str, tmp_path) -> None:
    with Context(tmp_path) as ctx:
        result = run_attack(name, 1, 0, context=ctx)
    assert result.ok and result.detected and result.detected_by == result.expected, result.to_json()
