"""OHIF Viewer v3 served by Orthanc itself, so a PACS user sees RadGate's DICOM SEG over the series.

Orthanc Explorer cannot overlay a Segmentation; OHIF's default mode can (its
``cornerstone-dicom-seg`` extension), reading the study from a DICOMweb server. The viewer is the
prebuilt ``dist/`` that ``@ohif/app`` publishes on npm (pinned version, tarball checked by
SHA-256, never committed). Orthanc's ServeFolders plugin serves it under ``/ohif/`` next to its
DICOMweb plugin under ``/dicom-web/``: one origin, so no CORS and the browser reuses Orthanc's
HTTP login for every request the viewer makes.

The published build assumes it is served at ``/``; :func:`build_site` lays out a served folder
(links to the unpacked dist) in which the few files that name that root are rewritten for the
``/ohif/`` prefix, with our own ``app-config.js`` and a copy of ``index.html`` named ``viewer``
(OHIF routes ``/viewer?StudyInstanceUIDs=...`` client-side; ServeFolders only serves files).

- ``python -m imaging.gateway.viewer install``: ``npm pack`` + checksum + unpack (idempotent;
  ``scripts/ci/install-viewer.sh``);
- :func:`orthanc_viewer_config`: the Orthanc configuration entries that serve a built site;
- :func:`viewer_url`: the URL that opens a study (with its SEG) in the viewer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

__all__ = [
    "OHIF_PACKAGE",
    "OHIF_SHA256",
    "OHIF_VERSION",
    "VIEWER_PREFIX",
    "ViewerError",
    "app_config",
    "build_site",
    "install_ohif",
    "ohif_dist",
    "orthanc_viewer_config",
    "study_link",
    "viewer_url",
    "viewer_url_template",
]

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
#: SHA-256 of ``npm pack @ohif/app@3.13.2`` (the registry tarball, 49,906,651 bytes).
OHIF_SHA256 = "b189d3963bfc58e9394a9db8c7be75d07beb029ec211dbb126d47b62969dd3f1"
#: URL path under which Orthanc serves the viewer.
VIEWER_PREFIX = "ohif"
SERVE_FOLDERS_PLUGIN = Path("/usr/share/orthanc/plugins/libServeFolders.so")

# The build's public path: webpack's runtime assignment in each entry bundle, and index.html.
_WEBPACK_PUBLIC_PATH = '__webpack_require__.p = "/"'
_INDEX_REFERENCE = re.compile(r'(href|src)="/(?!/)')
_INDEX_PUBLIC_URL = 'window.PUBLIC_URL="/"'
_CSS_ROOT_URL = "url(/"
# Files ServeFolders does not know the MIME type of (it answers application/octet-stream).
_EXTENSIONS = {
    "woff2": "font/woff2",
    "ico": "image/x-icon",
    "map": "application/json",
    "jsonc": "application/json",
    "webapp": "application/manifest+json",
}
# Large parts of the build the SEG workflow never loads (onnxruntime for AI tools, microscopy).
_SKIPPED = {"ort", "dicom-microscopy-viewer"}


class ViewerError(RuntimeError):
    """The OHIF build is missing, does not match its checksum, or has an unexpected layout."""


def ohif_dist() -> Path:
    """The unpacked ``dist/``: ``$RADGATE_OHIF_DIST``, else ``~/.cache/radgate/ohif/VERSION/dist``
    (``$XDG_CACHE_HOME`` respected), where ``install`` puts it."""
    explicit = os.environ.get("RADGATE_OHIF_DIST")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "radgate" / "ohif" / OHIF_VERSION / "dist"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _npm_pack(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerError("npm is not installed (apt-get install npm)")
    spec = f"{OHIF_PACKAGE}@{OHIF_VERSION}"
    result = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(folder), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ViewerError(f"npm pack {spec} failed: {result.stderr.strip()[-500:]}")
    name = json.loads(result.stdout)[0]["filename"]
    return folder / Path(name).name


def install_ohif(dest: Path | None = None, tarball: Path | None = None) -> Path:
    """Unpack OHIF's ``dist/`` into ``dest`` (default :func:`ohif_dist`); ``npm pack`` fetches
    the tarball unless one is given. The tarball must match :data:`OHIF_SHA256`. Idempotent."""
    dest = dest or ohif_dist()
    marker = dest / ".radgate-ohif-sha256"
    if marker.exists() and marker.read_text().strip() == OHIF_SHA256:
        return dest
    with tempfile.TemporaryDirectory(prefix="radgate-ohif-") as tmp:
        archive = tarball or _npm_pack(Path(tmp))
        actual = _sha256(archive)
        if actual != OHIF_SHA256:
            raise ViewerError(f"{archive.name}: SHA-256 {actual} is not the pinned {OHIF_SHA256}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(archive, "r:gz") as archive_file:
            members = [
                m
                for m in archive_file.getmembers()
                if m.name.startswith("package/dist/") and m.name.split("/")[2] not in _SKIPPED
            ]
            archive_file.extractall(unpacked, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked / "package" / "dist"), dest)
    marker.write_text(OHIF_SHA256 + "\n")
    return dest


def app_config(prefix: str = VIEWER_PREFIX, dicomweb_root: str = "/dicom-web") -> str:
    """OHIF's ``app-config.js``: one DICOMweb data source, Orthanc's, on the page's own origin."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc DICOMweb",
            "name": "orthanc",
            # Filled in below from window.location.origin (the viewer and Orthanc share it).
            "qidoRoot": None,
            "wadoRoot": None,
            "wadoUriRoot": None,
            # Orthanc's DICOMweb plugin: no includefield=all, wildcards yes, no fuzzy matching.
            "qidoSupportsIncludeField": False,
            "supportsReject": False,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "staticWado": False,
            "singlepart": "pdf,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": f"/{prefix}",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    root = json.dumps(dicomweb_root)
    return (
        "// Written by RadGate (imaging.gateway.viewer): OHIF reads Orthanc's DICOMweb on this origin.\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function () {\n"
        f"  var root = window.location.origin + {root};\n"
        "  var c = window.config.dataSources[0].configuration;\n"
        "  c.qidoRoot = c.wadoRoot = c.wadoUriRoot = root;\n"
        "})();\n"
    )


def _rebased(name: str, text: str, base: str) -> str | None:
    """The bundle ``text`` with webpack's public path set to ``base``, or None if it sets none;
    more than one assignment means a build other than the pinned one."""
    count = text.count(_WEBPACK_PUBLIC_PATH)
    if count == 0:
        return None
    if count != 1:
        raise ViewerError(f"{name}: expected one {_WEBPACK_PUBLIC_PATH!r} in OHIF {OHIF_VERSION}'s build")
    return text.replace(_WEBPACK_PUBLIC_PATH, f'__webpack_require__.p = "{base}"')


def build_site(
    site: Path, *, dist: Path | None = None, prefix: str = VIEWER_PREFIX, dicomweb_root: str = "/dicom-web"
) -> Path:
    """Lay out the folder Orthanc serves under ``/<prefix>/``: links to ``dist``'s files, the
    entry bundles and ``index.html`` rebased onto the prefix, our ``app-config.js``, and
    ``viewer`` (the client-side route's page). Rebuilt from scratch each call."""
    dist = dist or ohif_dist()
    if not (dist / "index.html").is_file():
        raise ViewerError(f"no OHIF build at {dist} (scripts/ci/install-viewer.sh)")
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    base = f"/{prefix}/"
    for entry in sorted(dist.iterdir()):
        if entry.name in {"index.html", "app-config.js"} or entry.name.startswith("."):
            continue
        text = entry.read_text(encoding="utf-8") if entry.suffix in {".js", ".css"} else ""
        patched = _rebased(entry.name, text, base) if entry.suffix == ".js" else None
        if patched is not None:
            (site / entry.name).write_text(patched, encoding="utf-8")
        elif entry.suffix == ".css" and _CSS_ROOT_URL in text:  # the font, by absolute URL
            (site / entry.name).write_text(text.replace(_CSS_ROOT_URL, f"url({base}"), encoding="utf-8")
        else:
            (site / entry.name).symlink_to(entry.resolve())
    index = (dist / "index.html").read_text(encoding="utf-8")
    if _INDEX_PUBLIC_URL not in index:
        raise ViewerError(f"index.html of OHIF {OHIF_VERSION}: no public URL to rebase")
    index = _INDEX_REFERENCE.sub(lambda m: f'{m.group(1)}="{base}', index)
    index = index.replace(_INDEX_PUBLIC_URL, f'window.PUBLIC_URL="{base}"')
    for name in ("index.html", "viewer"):
        (site / name).write_text(index, encoding="utf-8")
    (site / "app-config.js").write_text(app_config(prefix, dicomweb_root), encoding="utf-8")
    return site


def _extension_of(path: str) -> str:
    """What ServeFolders takes as a file's extension: the text after the last dot of the whole
    path, lowercased (so ``viewer`` under a dotted folder has a "extension" with slashes)."""
    dot = path.rfind(".")
    return "" if dot < 0 else path[dot + 1 :].lower()


def orthanc_viewer_config(site: Path, prefix: str = VIEWER_PREFIX) -> dict[str, Any]:
    """Entries to merge into an Orthanc configuration (which must load the DICOMweb plugin with
    root ``/dicom-web/``): the ServeFolders plugin and its mapping of ``/<prefix>/`` to ``site``,
    with MIME types for the files it does not know, ``viewer`` included."""
    if not SERVE_FOLDERS_PLUGIN.exists():
        raise ViewerError(f"Orthanc's ServeFolders plugin is missing ({SERVE_FOLDERS_PLUGIN})")
    folder = str(site.resolve())
    extensions = dict(_EXTENSIONS)
    extensions[_extension_of(f"{folder}/viewer")] = "text/html"
    return {
        "Plugins": [str(SERVE_FOLDERS_PLUGIN)],
        "ServeFolders": {
            "Folders": {f"/{prefix}": folder},
            "Extensions": {f".{k}" if k else "": v for k, v in extensions.items()},
            "AllowCache": False,
            "GenerateETag": True,
        },
    }


def viewer_url_template(base_url: str, prefix: str = VIEWER_PREFIX) -> str:
    """The viewer page on the Orthanc at ``base_url`` (``http://host:port``) as a template with
    ``{study}`` (what ``RADGATE_VIEWER_URL`` holds, for the reviewer UI's links)."""
    return f"{base_url.rstrip('/')}/{prefix}/viewer?StudyInstanceUIDs={{study}}"


def study_link(template: str, study_instance_uid: str) -> str:
    """``template`` (with ``{study}``) filled with the URL-quoted study UID."""
    return template.replace("{study}", quote_plus(study_instance_uid))


def viewer_url(base_url: str, study_instance_uid: str, prefix: str = VIEWER_PREFIX) -> str:
    """The viewer page of one study on the Orthanc at ``base_url`` (``http://host:port``)."""
    return study_link(viewer_url_template(base_url, prefix), study_instance_uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OHIF Viewer for Orthanc (RadGate)")
    sub = parser.add_subparsers(dest="action", required=True)
    install = sub.add_parser("install", help=f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION}, check, unpack")
    install.add_argument("--tarball", type=Path, help="an already downloaded tarball")
    install.add_argument("--dest", type=Path, help="default: $RADGATE_OHIF_DIST or the user cache")
    site = sub.add_parser("site", help="build the folder Orthanc serves and print its config entries")
    site.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "install":
            print(install_ohif(args.dest, args.tarball))
        else:
            print(json.dumps(orthanc_viewer_config(build_site(args.folder)), indent=2))
    except ViewerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
