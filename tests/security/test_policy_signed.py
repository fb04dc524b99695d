"""Attack: lower the bar by editing the policy file (fewer approvers, no thresholds). The gate
refuses every model under a policy that is not the newest signed one, until an admin signs it;
each decision records the policy's hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from governance.approvals import Gate, PolicyChanged, Workflow
from governance.policy import load_policy
from governance.testing import approved_version, create_cast, create_version
from tests.unit.test_approval_workflow import mlflow_template, registry

__all__ = ["mlflow_template", "registry"]

NAME = "cxr-policy"
REPO = Path(__file__).resolve().parents[2]


def test_an_edited_policy_is_refused_until_an_admin_signs_it(
    registry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text((REPO / "configs" / "governance" / "policy.yaml").read_text())
    monkeypatch.setenv("RADGATE_POLICY", str(policy_file))
    cast = create_cast()
    approved_version(registry, NAME, "production", cast)  # type: ignore[arg-type]  # first use signs
    decision = Gate(registry)(NAME, "production", fresh=True)  # type: ignore[arg-type]
    assert decision.allowed and decision.policy_sha256 == load_policy().sha256

    # the attack: one approval by anyone is enough, and no metric thresholds
    lax = yaml.safe_load(policy_file.read_text())
    lax["default"]["approvals"] = [{"role": "ml-engineer", "count": 1}]
    lax["default"]["checks"] = []
    policy_file.write_text(yaml.safe_dump(lax))
    decision = Gate(registry)(NAME, "production", fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert any("differs from the signed one" in r for r in decision.reasons), decision.reasons
    assert decision.policy_sha256 == load_policy().sha256
    second, _ = create_version(registry, NAME, payload=b"other weights")  # type: ignore[arg-type]
    workflow = Workflow(registry)  # type: ignore[arg-type]
    workflow.submit(cast["eng"], NAME, second)
    workflow.approve(cast["eng2"], NAME, second)
    with pytest.raises(PolicyChanged):
        workflow.promote(cast["eng"], NAME, second, "production")

    def sign(token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "radgate", "policy", "sign"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "RADGATE_TOKEN": token},
        )

    assert sign(cast.tokens["eng"]).returncode == 4  # only an admin signs
    assert not Gate(registry)(NAME, "production", fresh=True).allowed  # type: ignore[arg-type]
    signed = sign(cast.tokens["admin"])
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert Gate(registry)(NAME, "production", fresh=True).allowed  # type: ignore[arg-type]
