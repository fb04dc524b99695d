"""The restricted audit writers' scopes (governance.keyring.SERVICE_WRITERS) against the code each
service runs: every audit action those modules record, read from the call sites, is in the
service's scope. An action outside it would fail closed in the deployment (the append raises),
so a new ``record(...)`` in one of these modules needs its scope widened, or the entry moved to
the governance writer. Also the scope semantics: a prefix ends in ``.``, anything else is one
action exactly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from governance.keyring import SERVICE_WRITERS, action_in_scope, register_audit_writer
from governance.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# The modules whose audit entries each restricted service writes (what its process runs).
MODULES = {
    "gateway": ["imaging/gateway/scp.py", "imaging/gateway/stow.py", "imaging/ingest/runner.py"],
    "serving": [
        "serving/api.py",
        "serving/model.py",
        "serving/batch.py",
        "serving/interop/ups_routes.py",
        "serving/monitoring/feedback.py",
        "serving/monitoring/job.py",
        "serving/monitoring/alerts.py",
    ],
    "training": ["training/evidence.py", "training/explain/cli.py", "serving/monitoring/retrain.py"],
}
# call -> index of the action argument (governance.audit.record and the services' wrappers of it)
CALLS = {"record": 1, "audit": 1, "_audit": 2}
# Actions computed at the call site, by what they can be (read from the code around it).
COMPUTED = {"f'{step}.run'": ("ingest.run", "deid.run")}  # imaging/ingest/runner.py: recorder.step


def _actions(path: Path) -> list[str]:
    """The action of every ``record(...)`` / ``_audit(...)`` call: a literal, or an f-string's
    literal head (``"ui.view.{kind}"`` gives ``"ui.view."``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        index = CALLS.get(name)
        if index is None or len(node.args) <= index:
            continue
        action = node.args[index]
        if isinstance(action, ast.Constant) and isinstance(action.value, str):
            found.append(action.value)
        elif ast.unparse(action) in COMPUTED:
            found.extend(COMPUTED[ast.unparse(action)])
        elif isinstance(action, ast.JoinedStr) and isinstance(action.values[0], ast.Constant):
            found.append(str(action.values[0].value))
        elif isinstance(action, ast.Name) and action.id == "action":
            continue  # a wrapper passing its caller's action on (its callers are read too)
        else:
            pytest.fail(f"{path}: an audit action that is not a literal ({ast.unparse(action)})")
    return found


@pytest.mark.parametrize("writer", sorted(SERVICE_WRITERS))
def test_every_action_a_service_records_is_in_its_scope(writer: str) -> None:
    scope = SERVICE_WRITERS[writer]
    seen = []
    for module in MODULES[writer]:
        path = REPO / module
        if not path.exists():
            continue
        for action in _actions(path):
            seen.append(action)
            if action.endswith("."):  # an f-string's head: a prefix of the scope must cover it
                assert any(s.endswith(".") and action.startswith(s) for s in scope), (module, action)
            else:
                assert action_in_scope(action, scope), f"{module} records {action!r}, not in {scope}"
    assert seen, writer
    # and nothing of governance
    for governance in ("model.approve", "model.promote", "model.revoke", "model.demote", "policy.sign"):
        assert not action_in_scope(governance, scope), (writer, governance)


def test_a_scope_entry_is_a_prefix_or_one_action() -> None:
    scope = ("serve.", "model.register")
    assert action_in_scope("serve.predict.denied", scope)
    assert action_in_scope("model.register", scope)
    assert not action_in_scope("model.registered", scope)
    assert not action_in_scope("model.register.x", scope)
    assert not action_in_scope("servex", scope)


def test_writers_are_registered_once_with_valid_scopes(tmp_path: Path) -> None:
    from governance.keyring import ensure_service_writers, read_audit_writers

    settings = Settings(home=tmp_path, key_file=tmp_path / "keys" / "project.key", project_key=None)
    for bad in ((), ("model",), ("model..x",), ("a b.",)):
        with pytest.raises(ValueError):
            register_audit_writer("w", bad, settings)
    first = ensure_service_writers(settings)
    keys = {name: path.read_bytes() for name, path in first.items()}
    again = ensure_service_writers(settings)  # kept, never replaced
    assert {name: path.read_bytes() for name, path in again.items()} == keys
    registered = {w.name: w.actions for w in read_audit_writers(settings)}
    assert registered == SERVICE_WRITERS
