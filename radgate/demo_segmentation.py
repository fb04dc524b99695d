"""``radgate demo --task segmentation``: brain MR series to an approved 3D UNet and a DICOM SEG.

1. a site's PACS export: synthetic subjects built from real anatomy (mricron ch2 + AAL:
   cerebellum, deep grey nuclei, occipital lobe), one axial MR series each with PHI-bearing headers, and
   the site's label maps (NIfTI, keyed by the original accession number);
2. ingest (de-identification, store, lineage) and the residual-PHI scan of the store;
3. a segmentation dataset version: each label map aligned to its de-identified series and
   stored by hash, patient-level split;
4. training (``configs/train/segmentation-demo.yaml``: MONAI 3D UNet, Dice/HD95 per structure
   and subgroup, MLflow, registration pending review);
5. governance: two approvals by distinct people, the policy gate, promotion to ``staging``;
6. serving: a held-out (test split) series, as the PACS holds it (original UIDs: clinical
   inference runs on the site's data), is posted to Ray Serve behind the gate; the DICOM SEG and
   volume SR come back referencing it, are checked against the site's own label map, and go to
   the PACS with the series (an Orthanc on 127.0.0.1:4242 when one answers, or ``--pacs
   AET@HOST:PORT``), where the viewer overlays the SEG on the series.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from radgate.demo_stages import DemoFailure, StageRunner, console, demo_token, govern_stage, residual_phi_scan

if TYPE_CHECKING:
    from imaging.datasets import DatasetVersion
    from imaging.gateway.config import PacsPeer
    from imaging.volumes import AnatomySet, AnatomySubject

__all__ = ["pacs_peer", "run_segmentation_demo"]

DATASET_NAME = "anatomy"
#: Of the 24 default subjects 14 train / 3 val / 7 test: enough test series for subgroups (sex,
#: site...) of two or more, so the policy's subgroup Dice gap is measured (of 6: 3/1/2).
DEMO_SPLIT = {"train": 0.6, "val": 0.12, "test": 0.28}
_DEFAULT_PACS = "ORTHANC@127.0.0.1:4242"


def pacs_peer(spec: str | None) -> PacsPeer | None:
    """``AET@HOST:PORT`` -> a peer; without a spec, the local Orthanc if it answers C-ECHO."""
    from radgate.demo_pacs import echo, parse_peer

    peer = parse_peer(spec or _DEFAULT_PACS, "pacs")
    if spec is None and not echo(peer):
        return None
    return peer


def _ingest(home: Path, subjects: int, workers: int) -> tuple[dict[str, Any], AnatomySet]:
    from imaging.ingest import Sink, iter_files, run_files
    from imaging.volumes import write_anatomy_set

    anatomy = write_anatomy_set(home / "demo" / "anatomy-export", subjects=subjects, seed=11)
    console.print(
        f"generated {len(anatomy.subjects)} axial T1 MR series ({len(anatomy.files)} slices) of "
        f"{len(anatomy.subjects)} patients from real anatomy (mricron ch2 + AAL), PHI in headers; "
        f"label maps (NIfTI) keyed by accession number: {anatomy.labels_csv.name}"
    )
    report = run_files(list(iter_files([anatomy.dicom_dir])), sink=Sink.STORE, workers=workers, source="demo")
    data = report.as_dict()
    table = Table(show_header=False, title="ingest")
    for key in ("inputs", "deidentified", "duplicates", "quarantined", "files_per_s", "profile"):
        table.add_row(key, str(data[key]))
    console.print(table)
    identifiers: set[str] = set()
    for s in anatomy.subjects:
        identifiers.update(
            {s.patient_id, s.accession_number, s.series_instance_uid, s.volume.study_instance_uid}
        )
    data["residual_phi_instances"] = residual_phi_scan(identifiers, report.profile)
    return data, anatomy


def _dataset(labels_csv: Path, label_names: list[str]) -> DatasetVersion:
    from imaging.volumes import create_segmentation_dataset

    report = create_segmentation_dataset(DATASET_NAME, labels_csv, label_names=label_names, split=DEMO_SPLIT)
    summary = report.version.manifest.summary()
    console.print(
        f"dataset version {report.version.id[:16]} ({DATASET_NAME}): {summary['series']} series, "
        f"{summary['patients']} patients; splits "
        + ", ".join(f"{k}={v['series']}" for k, v in sorted(summary["splits"].items()))
        + f"; skipped {sum(report.skipped.values())}"
    )
    return report.version


def _train(dataset: DatasetVersion, workers: int, overrides: list[str]) -> dict[str, Any]:
    from training.config import load_config
    from training.run import train

    path = Path(__file__).resolve().parents[1] / "configs" / "train" / "segmentation-demo.yaml"
    config = load_config(path, [*overrides, f"data.dataset={dataset.id}", f"run.workers={workers}"])
    outcome = train(config)
    metrics = {k: round(v, 4) for k, v in sorted(outcome.metrics.items()) if isinstance(v, int | float)}
    table = Table(show_header=False, title=f"model {outcome.model_name} v{outcome.model_version}")
    for key in [k for k in metrics if k.startswith("test_")][:14]:
        table.add_row(key, str(metrics[key]))
    console.print(table)
    return {
        "model": outcome.model_name,
        "model_version": outcome.model_version,
        "mlflow_run_id": outcome.run_id,
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith("test_")},
    }


def _dice(reference: Any, predicted: Any, labels: dict[int, str]) -> dict[str, float]:
    out = {}
    for value, name in labels.items():
        if value == 0:
            continue
        a, b = reference == value, predicted == value
        total = int(a.sum() + b.sum())
        out[name] = round(2.0 * int((a & b).sum()) / total, 3) if total else 1.0
    return out


def _held_out(dataset: DatasetVersion, anatomy: AnatomySet) -> AnatomySubject:
    """The site's original series of a test-split (de-identified) series: the demo plays the
    site, which holds the originals; the de-identified UID is the keyed HMAC of the original."""
    from governance.keys import load_project_key
    from imaging.deid.pseudonym import Pseudonymizer

    held_out = dataset.manifest.series_in("test") or dataset.manifest.series_in("val")
    pseudonymizer = Pseudonymizer(load_project_key())
    by_uid = {pseudonymizer.uid(s.series_instance_uid): s for s in anatomy.subjects}
    return by_uid[held_out[0].series_uid]


def _serve(
    home: Path,
    dataset: DatasetVersion,
    anatomy: AnatomySet,
    model: str,
    pacs: PacsPeer | None,
    orthanc: Any = None,
) -> dict[str, Any]:
    import io

    import pydicom

    from imaging.gateway.push import PushError, push_files
    from imaging.volumes import assemble_series, read_label_volume
    from serving.demo import segment_series_once

    subject = _held_out(dataset, anatomy)
    summary: dict[str, Any] = {}
    if pacs is not None:  # the series as the PACS holds it (the demo's PACS starts empty)
        try:
            summary["series_in_pacs"] = push_files(pacs, list(subject.files)).sent
        except PushError as exc:
            console.print(f"[yellow]the PACS refused the series ({exc}); results kept locally[/]")
            pacs = None
    token = demo_token(home, "demo-radiologist")
    answer, objects = segment_series_once(model, list(subject.files), token=token, alias="staging", pacs=pacs)
    out_dir = home / "demo" / "segmentation"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for data in objects:
        kind = "seg" if pydicom.dcmread(io.BytesIO(data)).Modality == "SEG" else "sr"
        written[kind] = out_dir / f"{kind}.dcm"
        written[kind].write_bytes(data)
    result = answer["results"][0]
    table = Table(title=f"{model}@staging on a held-out series ({result['slices']} slices)")
    for column in ("structure", "volume (mL)"):
        table.add_column(column)
    for structure in result["structures"]:
        table.add_row(str(structure.get("name")), str(structure.get("volume_ml")))
    console.print(table)
    summary["objects"] = {k: str(v) for k, v in written.items()}
    if "seg" in written:  # the SEG, read back onto the series, against the site's own label map
        volume = assemble_series(subject.files)
        predicted = read_label_volume(written["seg"], volume)
        reference = read_label_volume(subject.label_path, volume)
        summary["dice_vs_site_labels"] = _dice(reference, predicted, dataset.manifest.label_map)
        console.print(f"DICOM SEG vs the site's label map (Dice): {summary['dice_vs_site_labels']}")
    if pacs is None:
        console.print(
            "no PACS (start Orthanc on 127.0.0.1:4242 or pass --pacs): results kept locally; an Orthanc "
            "with the OHIF viewer: .venv/bin/python scripts/ci/orthanc.py start --dir .radgate/pacs --viewer "
            "--dicom-port 4242 --http-port 8042 --modality radgate=RADGATE@127.0.0.1:11112"
        )
    else:
        summary["pushed"] = pushed = answer.get("pushed") or {}
        console.print(
            f"sent the series and {pushed.get('sent', 0)} result object(s) to "
            f"{pacs.ae_title}@{pacs.host}:{pacs.port}: both are in one study there, for a SEG-capable "
            "viewer (e.g. OHIF) to overlay the segmentation on the series"
        )
        # On the console only (a study UID of the site's data, as the PACS itself shows it).
        study_uid = subject.volume.study_instance_uid
        url = orthanc.viewer_url(study_uid) if orthanc is not None else _viewer_url(pacs, study_uid)
        console.print("the SEG over the series in OHIF (an Orthanc started with --viewer):")
        console.print(url, soft_wrap=True)  # one unbroken line, to open or copy
    for kind, path in written.items():
        console.print(f"  {kind}: {path}")
    return summary


def _viewer_url(pacs: PacsPeer, study_uid: str) -> str:
    """OHIF served by that Orthanc (``scripts/ci/orthanc.py start --viewer``): its web root is
    ``$RADGATE_PACS_WEB_URL``, default Orthanc's HTTP port 8042 on the PACS host."""
    import os

    from imaging.gateway.viewer import viewer_url

    return viewer_url(os.environ.get("RADGATE_PACS_WEB_URL") or f"http://{pacs.host}:8042", study_uid)


def run_segmentation_demo(
    runner: StageRunner,
    people: dict[str, Any],
    subjects: int,
    workers: int,
    stages: list[str],
    pacs: str | None,
    overrides: list[str] | None = None,
) -> None:
    """The stages above, recorded in ``runner`` (stage table + summary)."""
    from governance.auth import acting_as
    from radgate.demo_pacs import echo

    home = runner.home
    summary = runner.summary
    orthanc: Any = None
    with runner.stage("pacs", "0. the PACS", "install Orthanc (scripts/ci/install-apt.sh) or pass --pacs"):
        peer = pacs_peer(pacs) if "serve" in stages else None
        if pacs is not None and peer is not None and not echo(peer):
            raise DemoFailure(
                "pacs", f"{peer.ae_title}@{peer.host}:{peer.port} does not answer C-ECHO", "check --pacs"
            )
        if "serve" in stages and peer is None:
            # no --pacs and no Orthanc on 127.0.0.1:4242: a private one, as the classification demo
            from imaging.gateway.config import PacsPeer
            from radgate.demo_pacs import start_orthanc

            orthanc = start_orthanc(home / "demo" / "pacs", {"radgate": ("RADGATE", "127.0.0.1", 11112)})
            peer = PacsPeer(name="demo-pacs", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
            summary["orthanc"] = {"url": orthanc.url, "workdir": str(home / "demo" / "pacs")}
    with acting_as(people["demo-steward"]):
        with runner.stage(
            "ingest", "1. PACS export (brain MR series) -> de-identification -> store", "radgate deid report"
        ):
            ingest, anatomy = _ingest(home, subjects, workers)
            summary["ingest"] = {
                k: ingest[k] for k in ("inputs", "deidentified", "quarantined", "residual_phi_instances")
            }
        with runner.stage(
            "dataset",
            "2. segmentation dataset version: label maps aligned to the series",
            "radgate dataset list",
        ):
            dataset = _dataset(anatomy.labels_csv, anatomy.label_names)
            summary["dataset_version"] = dataset.id
    if "train" not in stages:
        return
    with (
        acting_as(people["demo-trainer"]),
        runner.stage(
            "train",
            "3. 3D UNet -> MLflow (Dice, HD95), registration pending review",
            "radgate train configs/train/segmentation-demo.yaml",
        ),
    ):
        summary["train"] = trained = _train(dataset, workers, list(overrides or []))
    model, version = trained["model"], trained["model_version"]
    if "govern" not in stages or not (model and version):
        return
    with runner.stage(
        "govern", "4. two-person approval, the policy gate, promotion", "radgate model status NAME VERSION"
    ):
        summary["govern"] = governed = govern_stage(
            people,
            model,
            version,
            what="3D segmentation of brain MR series (cerebellum, deep grey nuclei, occipital lobe)",
        )
        summary["promoted"] = governed["promoted_to_staging"]
        if not governed["promoted_to_staging"]:
            raise DemoFailure(
                "govern",
                "the model did not pass the policy: " + "; ".join(governed["reasons"])[:300],
                f"radgate model status {model} {version}",
            )
    if "serve" in stages:
        with (
            acting_as(people["demo-radiologist"]),
            runner.stage(
                "serve",
                "5. a held-out series -> Ray Serve (gate) -> DICOM SEG + SR -> PACS",
                "radgate serve --help",
            ),
        ):
            summary["serve"] = _serve(home, dataset, anatomy, model, peer, orthanc)
        if orthanc is not None:
            console.print(
                f"the demo's Orthanc is left running (user {orthanc.user}, password in "
                f"{orthanc.workdir / 'orthanc.json'}): {orthanc.url}/app/explorer.html; stop it: "
                f"python scripts/ci/orthanc.py stop --dir {home / 'demo' / 'pacs'}",
                soft_wrap=True,
            )
