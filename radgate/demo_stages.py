"""What every ``radgate demo`` journey shares: the timed stage runner and its failure, the demo's
people and their tokens, the residual-PHI scan of the stored instances, and the governance stage.

The journeys (:mod:`radgate.demo_classification`, :mod:`radgate.demo_segmentation`, their serving
and PACS endings) import from here; :mod:`radgate.demo` (the CLI) dispatches to them, so no
journey imports the command that runs it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = [
    "DemoFailure",
    "StageResult",
    "StageRunner",
    "console",
    "demo_principals",
    "demo_token",
    "govern_stage",
    "residual_phi_scan",
    "stage",
]

console = Console()


class DemoFailure(RuntimeError):
    """A stage could not do its job: which stage, why, and what to run next."""

    def __init__(self, stage: str, why: str, next_step: str = "") -> None:
        super().__init__(f"{stage}: {why}")
        self.stage, self.why, self.next_step = stage, why, next_step


@dataclass
class StageResult:
    name: str
    seconds: float
    outcome: str  # "ok", "failed", "skipped"
    detail: str = ""


class StageRunner:
    """Times each stage, records its outcome, prints the table and writes ``summary.json``."""

    def __init__(self, home: Path, task: str) -> None:
        self.home, self.task = home, task
        self.results: list[StageResult] = []
        self.summary: dict[str, Any] = {"task": task, "home": str(home)}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str, title: str, next_step: str = "") -> Iterator[None]:
        console.rule(f"[bold]{title}")
        start = time.perf_counter()
        try:
            yield
        except DemoFailure as exc:
            self.results.append(StageResult(name, time.perf_counter() - start, "failed", exc.why))
            raise
        except typer.Exit:
            self.results.append(StageResult(name, time.perf_counter() - start, "failed", "see above"))
            raise
        except Exception as exc:  # any failure of a stage ends the demo with its name and reason
            why = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.results.append(StageResult(name, time.perf_counter() - start, "failed", why))
            raise DemoFailure(name, why, next_step) from exc
        else:
            self.results.append(StageResult(name, time.perf_counter() - start, "ok"))

    def skip(self, name: str, why: str) -> None:
        self.results.append(StageResult(name, 0.0, "skipped", why))

    def finish(self, failure: DemoFailure | None = None) -> Path:
        """Print the stage table, write ``summary.json`` (and print it as the last line)."""
        elapsed = time.perf_counter() - self.started
        table = Table(title=f"radgate demo ({self.task}): {elapsed:.0f} s")
        for column in ("stage", "seconds", "outcome"):
            table.add_column(column)
        colours = {"ok": "green", "failed": "red", "skipped": "yellow"}
        for result in self.results:
            shown = result.outcome + (f": {result.detail}" if result.detail else "")
            table.add_row(result.name, f"{result.seconds:.1f}", f"[{colours[result.outcome]}]{shown}[/]")
        console.print(table)
        self.summary["stages"] = [
            {"stage": r.name, "seconds": round(r.seconds, 1), "outcome": r.outcome, "detail": r.detail}
            for r in self.results
        ]
        self.summary["elapsed_s"] = round(elapsed, 1)
        if failure is not None:
            self.summary["failed"] = {"stage": failure.stage, "why": failure.why, "next": failure.next_step}
        path = self.home / "demo" / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary, indent=2, default=str))
        console.print(f"summary: {path}")
        print(json.dumps(self.summary, default=str))
        return path


def stage(title: str) -> None:
    console.rule(f"[bold]{title}")


_ALNUM_TOKEN = re.compile(r"[0-9A-Za-z]+")
_UID_TOKEN = re.compile(r"[0-9A-Za-z.]+")
_PLAIN = re.compile(r"^[0-9A-Za-z]+$")
_UID_VALUE = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def _residual(data: bytes, plain: set[str], uids: set[str], others: set[str]) -> bool:
    """Whether any identifier occurs in ``data`` as a whole token (the same test as
    ``imaging.phi_corpus.residual_phi``; plain and UID values by token sets, in one pass each)."""
    from imaging.phi_corpus import residual_phi

    text = data.decode("latin-1")
    if plain and plain & {t.upper() for t in _ALNUM_TOKEN.findall(text)}:
        return True
    if uids and uids & set(_UID_TOKEN.findall(text)):
        return True
    return bool(others and residual_phi(data, others))


def residual_phi_scan(identifiers: set[str], profile: str) -> int:
    """Scan every instance stored under ``profile`` for the original identifiers (an independent
    check of de-identification); raises :class:`DemoFailure` when one is found."""
    from sqlalchemy import select

    from governance.catalog import Instance, open_catalog
    from imaging.store import ContentStore

    store = ContentStore.from_settings()
    with open_catalog().session() as session:
        keys = list(session.scalars(select(Instance.store_key).where(Instance.profile == profile)))
    uids = {v for v in identifiers if _UID_VALUE.match(v)}
    plain = {v.upper() for v in identifiers - uids if _PLAIN.match(v)}
    others = {v for v in identifiers - uids if not _PLAIN.match(v)}
    leaking = [key for key in keys if _residual(store.get(key), plain, uids, others)]
    console.print(
        f"residual-PHI scan: {len(keys)} stored instances checked for {len(identifiers)} original "
        f"identifiers: [{'red' if leaking else 'green'}]{len(leaking)} with residual identifiers[/]"
    )
    if leaking:
        raise DemoFailure(
            "ingest",
            f"{len(leaking)} stored instance(s) still hold an original identifier",
            "radgate deid report; fix the profile (configs/deid) before training on this store",
        )
    return len(leaking)


DEMO_PEOPLE = {
    "demo-steward": "data-steward",
    "demo-trainer": "ml-engineer",
    "demo-ml-lead": "ml-engineer",
    "demo-radiologist": "clinical-reviewer",
}


def demo_principals(home: Path, token: str | None) -> dict[str, Any]:
    """The demo's people, created once and acted as by each stage (audited under their names).

    On an empty ``RADGATE_HOME`` a ``demo-admin`` is bootstrapped to create them; when other
    users exist, an admin's token (``--token`` or ``RADGATE_TOKEN``) does, once. Their tokens are
    kept in ``RADGATE_HOME/demo/tokens.json`` (0600, like the project key) for the next runs.
    """
    from governance.auth import AuthError, add_user, authenticate, has_users, resolve_token

    path = home / "demo" / "tokens.json"
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in DEMO_PEOPLE if name not in tokens]
    try:
        if missing:
            if "demo-admin" in tokens:
                admin = authenticate(tokens["demo-admin"])
            elif not has_users():
                tokens["demo-admin"] = add_user("demo-admin", "admin", by=None).token
                admin = authenticate(tokens["demo-admin"])
            else:
                admin = authenticate(resolve_token(token))
            for name in missing:
                tokens[name] = add_user(name, DEMO_PEOPLE[name], by=admin).token
        people = {name: authenticate(tokens[name]) for name in DEMO_PEOPLE}
    except AuthError as exc:
        console.print(
            f"[red]error:[/red] {exc} (the demo creates its users on an empty RADGATE_HOME, or "
            "with an admin's --token when other users exist)"
        )
        raise typer.Exit(4) from None
    finally:
        if tokens:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(tokens, handle)
    return people


def demo_token(home: Path, person: str) -> str:
    tokens: dict[str, str] = json.loads((home / "demo" / "tokens.json").read_text())
    return tokens[person]


def _checklist_table(checklist: Any, title: str) -> Table:
    table = Table(title=title)
    for column in ("requirement", "passed", "value", "expected"):
        table.add_column(column)
    for item in checklist.items:
        mark = "[green]yes[/]" if item.passed else "[red]no[/]"
        table.add_row(item.name, mark, str(item.value)[:40], item.expected[:40])
    return table


def govern_stage(
    people: dict[str, Any],
    model: str,
    version: str,
    what: str = "synthetic brain MR slices",
    *,
    expect_refusal: bool = False,
) -> dict[str, Any]:
    """Submit, two approvals by distinct people with the right roles, the policy checklist, and
    promotion to ``staging`` if the policy holds; otherwise the policy's reasons are printed."""
    from governance.approvals.workflow import PolicyNotSatisfied, Workflow

    workflow = Workflow()
    workflow.submit(people["demo-trainer"], model, version, f"demo run: {what}")
    workflow.approve(people["demo-radiologist"], model, version, "overlays reviewed on the demo gallery")
    workflow.approve(people["demo-ml-lead"], model, version, "metrics and lineage reviewed")
    checklist = workflow.status(model, version)
    console.print(_checklist_table(checklist, f"policy checklist {model} v{version}"))
    reasons: list[str] = []
    try:
        workflow.promote(people["demo-ml-lead"], model, version, "staging")
        promoted = True
        console.print(f"[green]promoted[/] {model} v{version} to alias 'staging': the serving gate allows it")
    except PolicyNotSatisfied as exc:
        promoted = False
        reasons = [
            f"{item.name}: {item.value} (expected {item.expected})"
            + (f"; {item.detail}" if item.detail else "")
            for item in exc.checklist.failures
        ]
        colour = "green" if expect_refusal else "yellow"
        console.print(f"[{colour}]promotion of {model} v{version} refused by the policy gate[/]:")
        for reason in reasons:
            console.print(f"  - {reason}")
    return {
        "model": model,
        "version": version,
        "status": checklist.status,
        "promoted_to_staging": promoted,
        "failed": [i.name for i in checklist.failures],
        "reasons": reasons,
        "approved_by": ["demo-radiologist", "demo-ml-lead"],
    }
