"""``radgate ingest SOURCE --ray-address ADDR``: the command's side of the distributed intake
(progress, errors, summary); the work is :func:`imaging.ingest.distributed.ingest_on_cluster`."""

from __future__ import annotations

import os

from rich.console import Console

from governance.cli_support import fail

__all__ = ["ingest_on_ray"]

_err = Console(stderr=True)


def ingest_on_ray(sources: list[str], *, ray_address: str, profile: str | None) -> dict[str, object]:
    """Run the job; its report as a dict. Exit 2 for a bad source or profile, 1 when the job
    stopped before every input was recorded (the message says how far it got; rerun to resume)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from imaging.deid.errors import ProfileError
    from imaging.ingest.distributed import ClusterIngestReport, IngestJobError, SourceError, ingest_on_cluster

    if len(sources) != 1:
        raise fail("--ray-address takes one SOURCE (a folder, a storage prefix or a manifest)", 2)
    progress = Progress(
        TextColumn("[bold]de-identifying on the cluster"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not _err.is_terminal and os.environ.get("RADGATE_PROGRESS") != "1",
    )
    task = progress.add_task("ingest", total=None)

    def advance(report: ClusterIngestReport) -> None:
        progress.update(task, completed=report.done, total=report.inputs)

    try:
        with progress:
            report = ingest_on_cluster(
                sources[0], ray_address=ray_address, profile=profile, on_progress=advance
            )
    except (SourceError, ProfileError) as exc:
        raise fail(str(exc), 2) from exc
    except IngestJobError as exc:
        raise fail(str(exc), 1) from exc
    data = report.as_dict()
    data["workers"] = sum(1 for _ in report.files_per_node)
    return data
