"""The classification demo's ending: served behind the gate, results in the PACS, a reviewer's
feedback in monitoring and the audit trail.

A held-out study (test split, with a lesion) is put into the PACS as the site holds it (original
UIDs: clinical inference runs on the site's data). The PACS sends it by C-STORE to the inference
AE (``serving.inference_ae``, what ``radgate serve-ae`` runs), which posts it to Ray Serve with
``push=true``: the gate is checked, the calibrated probability computed, and the TID 1500 SR and
the saliency Secondary Capture (the family's overlay method) are C-STOREd back into the same
study. The PACS is then asked (C-FIND) what the study holds, each result object is checked with
dciodvfy, the radiologist's agree/disagree goes through ``POST /v1/feedback``, and the feedback
counter, the served-case list and the (verified) audit chain are read back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radgate.demo_pacs import dciodvfy, echo, find_series, parse_peer, start_orthanc
from radgate.demo_stages import DemoFailure, StageRunner, console, demo_token

if TYPE_CHECKING:
    from imaging.datasets import DatasetVersion
    from imaging.demo_lesions import LesionSet, LesionStudy
    from imaging.gateway.config import PacsPeer

__all__ = ["serve_and_review"]

_AE_TITLE = "RADGATE-AI"
_CALLING_AE = "RADGATE"  # serving's and the demo's calling AE title (serving.config.calling_ae)
_WAIT_S = 120


#: Held-out studies posted to the served model after the PACS one: the drift check compares at
#: least the monitoring config's ``min_samples`` (30) live requests with the training profile.
_WORKLIST = 40


def _test_studies(dataset: DatasetVersion, lesions: LesionSet) -> list[LesionStudy]:
    """The test split's studies as the site holds them, in manifest order."""
    from radgate.demo_classification import _originals

    originals = _originals(dataset, lesions)
    studies = (originals.get(item.study) for item in dataset.manifest.items_in("test"))
    return [s for s in studies if s is not None]


def _held_out(tested: list[LesionStudy]) -> LesionStudy:
    """The first positive study of the test split (:func:`_test_studies`)."""
    for study in tested:
        if study.label == 1:
            return study
    raise DemoFailure("pacs", "no positive study in the test split", "check the dataset version")


def _into_pacs(orthanc: Any, peer: PacsPeer, study: LesionStudy) -> str | None:
    """Put the study into the PACS; returns Orthanc's instance id (our own Orthanc only)."""
    from imaging.gateway.push import PushError, push_files

    if orthanc is not None:
        return str(orthanc.upload(study.path.read_bytes())["ID"])
    try:
        push_files(peer, [study.path], calling_ae=_CALLING_AE)
    except PushError as exc:
        raise DemoFailure(
            "pacs", f"the PACS refused the study ({exc})", "check the PACS accepts RADGATE"
        ) from exc
    return None


def _send_to_ae(orthanc: Any, instance_id: str | None, study: LesionStudy, ae_port: int) -> None:
    """The PACS routes the study to the inference AE (our Orthanc by its REST API); an existing
    PACS is not ours to configure, so the demo forwards the study it sent there itself."""
    from imaging.gateway.config import PacsPeer
    from imaging.gateway.push import push_files

    if orthanc is not None:
        orthanc.rest(
            "POST", "/modalities/radgate-ai/store", {"Resources": [instance_id], "Synchronous": True}
        )
        return
    push_files(
        PacsPeer(name="radgate-ai", ae_title=_AE_TITLE, port=ae_port), [study.path], calling_ae=_CALLING_AE
    )


def _wait(ae: Any) -> dict[str, Any]:
    deadline = time.monotonic() + _WAIT_S
    while ae.stats.received < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    if ae.stats.received < 1:
        raise DemoFailure(
            "serve", f"the inference AE received nothing within {_WAIT_S} s", "radgate serve-ae --help"
        )
    ae.drain()
    if not ae.stats.answers:
        raise DemoFailure(
            "serve", f"serving answered {dict(ae.stats.statuses)} to the inference AE", "radgate serve --help"
        )
    return dict(ae.stats.answers[-1])


def _feedback(url: str, token: str, answer: dict[str, Any], truth: str) -> dict[str, Any]:
    import httpx

    agree = answer["label"] == truth
    body: dict[str, Any] = {"request_id": answer["request_id"], "agree": agree, "comment": "demo review"}
    if not agree:
        body["corrected_label"] = truth
    # Serving records the request (what feedback refers to) off the request path: a 404 right
    # after the prediction means "not recorded yet", retried for a bounded time.
    deadline = time.monotonic() + 60
    while True:
        reply = httpx.post(
            f"{url}/v1/feedback", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        if reply.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(1)
    if reply.status_code != 201:
        raise DemoFailure(
            "feedback", f"POST /v1/feedback answered {reply.status_code}", "radgate serve --help"
        )
    return {"agree": agree, "label_given": truth}


def _worklist(url: str, token: str, model: str, studies: list[LesionStudy]) -> dict[str, Any]:
    """Post held-out studies to the served model as a PACS integration would (one DICOM
    instance per request, no explanation): the live window the drift check reads, and the
    served accuracy against the site's labels."""
    import httpx

    correct = 0
    probabilities: dict[str, float] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for study in studies:
            reply = client.post(
                f"{url}/v1/models/{model}/predict",
                params={"explain": "none"},
                content=study.path.read_bytes(),
                headers={"Content-Type": "application/dicom"},
            )
            if reply.status_code != 200:
                raise DemoFailure(
                    "serve",
                    f"POST /v1/models/{model}/predict answered {reply.status_code}",
                    "radgate serve --help",
                )
            results = reply.json().get("results") or [{}]
            label = (results[0].get("decision") or {}).get("label")
            correct += int(label == ("lesion" if study.label == 1 else "no_finding"))
            probabilities[study.sop_instance_uid] = float(results[0].get("probability", float("nan")))
    return {
        "requests": len(studies),
        "agree_with_site_labels": round(correct / max(len(studies), 1), 4),
        "probabilities": probabilities,
    }


def _on_triton(
    runner: StageRunner,
    people: dict[str, Any],
    model: str,
    version: str,
    token: str,
    studies: list[LesionStudy],
    expected: dict[str, float],
) -> None:
    """The same approved version on NVIDIA Triton: published by the ML lead into a read-only
    repository (refused unless the gate allows it), loaded in explicit model-control mode from
    verified bytes, and served by Ray Serve with the Triton backend; the worklist's calibrated
    probabilities must equal the in-process ones. Skipped where ``tritonserver`` is absent."""
    from governance.auth import acting_as
    from serving.demo import served
    from serving.triton import TritonNotInstalled, TritonServer, find_tritonserver
    from serving.triton.publish import publish

    try:
        find_tritonserver()
    except TritonNotInstalled:
        runner.skip("triton", "tritonserver not installed (scripts/ci/install-triton.sh)")
        return
    with runner.stage(
        "triton", "8b. the same version on Triton (Ray Serve, Triton backend)", "scripts/ci/install-triton.sh"
    ):
        root = runner.home / "demo" / "triton"
        repo = root / "repository"
        with acting_as(people["demo-ml-lead"]):
            publication = publish(
                f"{model}@staging", repo, actor="demo-ml-lead", role="ml-engineer", max_batch_size=8
            )
        server = TritonServer(repo, root / "work").start()
        try:
            options = {"backend": "triton", "triton_url": server.grpc_url, "triton_repository": str(repo)}
            with served(model, alias="staging", num_cpus=2, model_options=options) as url:
                answers = _worklist(url, token, model, studies)
        finally:
            server.stop()
        differences = [
            abs(answers["probabilities"][uid] - p)
            for uid, p in expected.items()
            if uid in answers["probabilities"]
        ]
        largest = max(differences) if differences else float("nan")
        runner.summary["serve"]["triton"] = {
            "version": publication.export.version,
            "artifact_sha256": publication.export.artifact_sha256,
            "requests": answers["requests"],
            "agree_with_site_labels": answers["agree_with_site_labels"],
            "max_probability_difference_vs_in_process": round(largest, 6),
        }
        console.print(
            f"Triton served v{publication.export.version} ({answers['requests']} studies): "
            f"{answers['agree_with_site_labels']:.0%} agree with the site's labels, largest probability "
            f"difference from the in-process model {largest:.2e}"
        )
        if not differences or largest > 1e-3:
            raise DemoFailure(
                "triton",
                f"Triton's probabilities differ from the in-process model's by {largest:.2e}",
                "radgate triton --help",
            )


def _drift(model: str) -> dict[str, Any]:
    """One drift check over the demo's live requests, as the ML lead (report, gauges, audit)."""
    from prometheus_client import REGISTRY, generate_latest

    from serving.monitoring.job import run_drift_check

    check = run_drift_check(model, window="1h", actor="demo-ml-lead")
    # the gauges this process just set, read as /metrics shows them (one per feature and test)
    gauges = _series(generate_latest(REGISTRY).decode(), model, ("radgate_drift",))
    return {
        "version": check.version,
        "n_live": check.result.n_live,
        "insufficient_data": check.result.insufficient,
        "drifted_features": check.result.drifted_features,
        "alert": check.alert,
        "report": str(check.paths.get("html", "")),
        "gauges": gauges,
    }


def _series(text: str, model: str, prefixes: tuple[str, ...]) -> dict[str, float]:
    """``model``'s samples of the metric families ``prefixes`` in Prometheus text (with all
    their labels; counters' ``_created`` and the check timestamps left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if "_created{" in line or "_timestamp" in line:
            continue
        if line.startswith(prefixes) and f'model="{model}"' in line:
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def _gauges(url: str, token: str, model: str) -> dict[str, float]:
    """Feedback and drift series of this model from the served ``/metrics``."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=60).text
    return _series(text, model, ("radgate_feedback", "radgate_drift"))


def _results_in_pacs(
    orthanc: Any, instance_id: str | None, peer: PacsPeer, study: LesionStudy, home: Path
) -> dict[str, Any]:
    series = find_series(peer, study.study_instance_uid)
    modalities = sorted({s["modality"] for s in series})
    found: dict[str, Any] = {
        "series": [{k: s[k] for k in ("modality", "instances", "description")} for s in series]
    }
    results = [s for s in series if s["modality"] in ("SR", "OT")]
    if not any(s["modality"] == "SR" for s in results) or not any(s["modality"] == "OT" for s in results):
        raise DemoFailure(
            "pacs-check",
            f"the PACS holds {modalities} for the study, not the SR and the Secondary Capture",
            "",
        )
    if orthanc is not None:  # our Orthanc: fetch each result object for dciodvfy and its UID
        checks = {}
        source = orthanc.rest("GET", f"/instances/{instance_id}")
        study_id = orthanc.rest("GET", f"/series/{source['ParentSeries']}")["ParentStudy"]
        for item in orthanc.rest("GET", f"/studies/{study_id}/instances") or []:
            tags = item.get("MainDicomTags", {})
            parent = orthanc.rest("GET", f"/series/{item['ParentSeries']}")
            modality = parent.get("MainDicomTags", {}).get("Modality")
            if modality not in ("SR", "OT"):
                continue
            data = orthanc.rest("GET", f"/instances/{item['ID']}/file")
            checks[tags.get("SOPInstanceUID", item["ID"])] = {
                "modality": modality,
                **dciodvfy(data, home / "demo" / "results", f"{modality.lower()}-{item['ID'][:8]}.dcm"),
            }
        found["objects"] = checks
        bad = {uid: c for uid, c in checks.items() if c.get("errors")}
        if bad:
            raise DemoFailure(
                "pacs-check", f"dciodvfy found errors in {len(bad)} result object(s)", "see demo/results"
            )
    return found


def _audit(people: dict[str, Any]) -> dict[str, Any]:
    from governance.audit import AuditLog

    log = AuditLog()
    report = log.verify()
    feedback = [
        e
        for e in log.entries(actor="demo-radiologist", newest_first=True, limit=50)
        if "feedback" in e.action
    ]
    return {
        "chain_ok": report.ok,
        "entries": report.entries,
        "feedback_entries_by_radiologist": len(feedback),
        "last_feedback_action": feedback[0].action if feedback else None,
    }


def serve_and_review(
    runner: StageRunner,
    people: dict[str, Any],
    dataset: DatasetVersion,
    lesions: LesionSet,
    champion: dict[str, Any],
    pacs: str | None,
    workers: int,
) -> None:
    from governance.auth import acting_as
    from serving.demo import served
    from serving.inference_ae import InferenceAE
    from serving.net import free_port

    home, model = runner.home, str(champion["model"])
    ae_port = free_port()
    orthanc: Any = None
    with runner.stage(
        "pacs", "7. the PACS: a held-out study with a lesion", "pass --pacs AET@HOST:PORT or install Orthanc"
    ):
        if pacs is not None:
            peer = parse_peer(pacs, "pacs")
            if not echo(peer):
                raise DemoFailure(
                    "pacs",
                    f"{peer.ae_title}@{peer.host}:{peer.port} does not answer C-ECHO (5 s)",
                    "check --pacs (it must know RADGATE), or leave it out: the demo starts an Orthanc",
                )
        else:
            orthanc = start_orthanc(
                home / "demo" / "pacs",
                {
                    "radgate": (_CALLING_AE, "127.0.0.1", 11112),
                    "radgate-ai": (_AE_TITLE, "127.0.0.1", ae_port),
                },
            )
            from imaging.gateway.config import PacsPeer

            peer = PacsPeer(name="demo-pacs", ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
        tested = _test_studies(dataset, lesions)
        study = _held_out(tested)
        instance_id = _into_pacs(orthanc, peer, study)
        console.print(
            f"held-out study (test split, lesion present) stored in {peer.ae_title}@{peer.host}:{peer.port}"
        )
    summary: dict[str, Any] = {
        "pacs": f"{peer.ae_title}@{peer.host}:{peer.port}",
        "pacs_started_by_demo": orthanc is not None,
    }
    runner.summary["serve"] = summary
    radiologist = demo_token(home, "demo-radiologist")
    ml_lead = demo_token(home, "demo-ml-lead")
    with (
        runner.stage(
            "serve",
            "8. Ray Serve (gate) <- inference AE <- PACS; SR + SC back to the PACS",
            "radgate serve --help",
        ),
        served(model, alias="staging", pacs=peer, num_cpus=max(workers, 1)) as url,
    ):
        ae = InferenceAE(
            serve_url=url, model=model, token=radiologist, ae_title=_AE_TITLE, port=ae_port,
            allowed_aes={peer.ae_title, _CALLING_AE}, series_mode=False,
        ).start()  # fmt: skip
        try:
            _send_to_ae(orthanc, instance_id, study, ae_port)
            answer = _wait(ae)
        finally:
            ae.stop()
        truth = "lesion" if study.label == 1 else "no_finding"
        summary["prediction"] = {**answer, "site_label": truth}
        console.print(
            f"served {model} v{answer['version']}@staging: {answer['label']} (calibrated probability "
            f"{answer['probability']}), {answer['pushed']} result object(s) sent back to the PACS"
        )
        others = [s for s in tested if s.path != study.path][:_WORKLIST]
        worklist = _worklist(url, radiologist, model, others)
        # per-study probabilities stay here (keyed by the site's UIDs): summary.json has the counts
        in_process = worklist.pop("probabilities")
        summary["worklist"] = worklist
        console.print(
            f"{summary['worklist']['requests']} more held-out studies served: "
            f"{summary['worklist']['agree_with_site_labels']:.0%} agree with the site's labels"
        )
        with runner.stage(
            "feedback", "9. the radiologist's feedback -> monitoring (feedback, drift), audit",
            "radgate monitor --help",
        ):  # fmt: skip
            with acting_as(people["demo-radiologist"]):
                summary["feedback"] = _feedback(url, radiologist, answer, truth)
            summary["gauges"] = _gauges(url, ml_lead, model)
            with acting_as(people["demo-ml-lead"]):
                summary["drift"] = _drift(model)
            drift = summary["drift"]
            console.print(
                f"drift check of v{drift['version']} on {drift['n_live']} live requests: "
                + ("insufficient data" if drift["insufficient_data"] else
                   f"drifted features {drift['drifted_features'] or 'none'}, alert {drift['alert']}")
                + f"; report {drift['report']}"
            )  # fmt: skip
    _on_triton(runner, people, model, str(answer["version"]), radiologist, others, in_process)
    with runner.stage(
        "pacs-check", "10. what the PACS holds now (C-FIND), dciodvfy of the results", "see demo/results"
    ):
        summary["in_pacs"] = _results_in_pacs(orthanc, instance_id, peer, study, home)
        summary["audit"] = _audit(people)
        from serving.ui.predictions import recent_predictions

        listed = recent_predictions(model=model)
        summary["cases_listed"] = listed.total
    request_id = answer["request_id"]
    console.print(f"the PACS study holds: {[s['modality'] for s in summary['in_pacs']['series']]}")
    console.print(
        f"audit chain verified: {summary['audit']['chain_ok']} ({summary['audit']['entries']} entries); "
        f"feedback by demo-radiologist: {summary['audit']['feedback_entries_by_radiologist']}; "
        f"gauges: {summary['gauges'] | summary['drift']['gauges']}"
    )
    console.print("where to look:")
    viewer_env = ""
    if orthanc is not None and orthanc.viewer:
        # the case page links to the study in OHIF when the UI knows the viewer's URL template
        from imaging.gateway.viewer import viewer_url_template

        template = viewer_url_template(orthanc.url)
        viewer_env = f"RADGATE_VIEWER_URL='{template}' "
        summary["viewer_url_template"] = template
    console.print(
        f"  reviewer UI: {viewer_env}RADGATE_HOME={home} radgate ui, then "
        f"http://127.0.0.1:8600/ui/predictions/{request_id}",
        soft_wrap=True,
    )
    console.print(
        f"  the model's evidence: http://127.0.0.1:8600/ui/models/{model}/{champion['version']}",
        soft_wrap=True,
    )
    if orthanc is not None:
        console.print(
            f"  the study in Orthanc (user {orthanc.user}, password in {orthanc.workdir / 'orthanc.json'}):"
        )
        if orthanc.viewer:
            console.print("  " + orthanc.viewer_url(study.study_instance_uid), soft_wrap=True)
        console.print(f"  {orthanc.url}/app/explorer.html", soft_wrap=True)
        console.print(f"  stop it: python scripts/ci/orthanc.py stop --dir {home / 'demo' / 'pacs'}")
        summary["orthanc"] = {"url": orthanc.url, "workdir": str(home / "demo" / "pacs")}
