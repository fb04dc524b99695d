"""The OHIF site Orthanc serves (``imaging.gateway.viewer``): install checks, rebasing, config.

The viewer running in a browser over a real Orthanc is ``tests/integration/test_pacs_viewer.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from imaging.gateway import viewer
from imaging.gateway.viewer import ViewerError, app_config, build_site, install_ohif, orthanc_viewer_config

INDEX = (
    '<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
    '<script defer src="/app.bundle.abc.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '<a href="https://ohif.org/">x</a></head><body></body></html>'
)


def fake_dist(root: Path) -> Path:
    """The shape of OHIF's published dist: index.html, entry bundles with webpack's public path,
    CSS naming a font by absolute URL, a lazily loaded chunk, a folder of assets."""
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "app-config.js").write_text("window.config = {demo: true};")
    (dist / "app.bundle.abc.js").write_text('(() => {\n__webpack_require__.p = "/";\n})();')
    (dist / "compute.bundle.def.js").write_text('(() => {\n__webpack_require__.p = "/";\n})();')
    (dist / "12.bundle.aaa.js").write_text("console.log('chunk')")
    (dist / "app.bundle.css").write_text("@font-face{src:url(/font.woff2)}")
    (dist / "font.woff2").write_bytes(b"wOF2")
    (dist / "assets" / "logo.png").write_bytes(b"\x89PNG")
    return dist


def test_site_rebases_the_build_onto_the_prefix(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    site = build_site(tmp_path / "site", dist=dist, prefix="ohif")

    index = (site / "index.html").read_text()
    assert 'window.PUBLIC_URL="/ohif/"' in index
    for ref in ('href="/ohif/manifest.json"', 'src="/ohif/app-config.js"', 'src="/ohif/app.bundle.abc.js"'):
        assert ref in index
    assert 'href="https://ohif.org/"' in index  # absolute URLs elsewhere untouched
    assert (site / "viewer").read_text() == index  # the client-side route's page
    for bundle in ("app.bundle.abc.js", "compute.bundle.def.js"):
        assert '__webpack_require__.p = "/ohif/"' in (site / bundle).read_text()
        assert not (site / bundle).is_symlink()
    assert (site / "app.bundle.css").read_text() == "@font-face{src:url(/ohif/font.woff2)}"
    # everything else is the unpacked build itself, linked
    for name in ("12.bundle.aaa.js", "font.woff2", "assets"):
        assert (site / name).is_symlink() and (site / name).resolve() == (dist / name).resolve()
    assert "demo: true" not in (site / "app-config.js").read_text()
    assert (dist / "index.html").read_text() == INDEX  # the build is never modified


def test_site_refuses_a_build_it_does_not_recognise(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    (dist / "app.bundle.abc.js").write_text('__webpack_require__.p = "/"; __webpack_require__.p = "/";')
    with pytest.raises(ViewerError, match="expected one"):
        build_site(tmp_path / "site", dist=dist)
    with pytest.raises(ViewerError, match="no OHIF build"):
        build_site(tmp_path / "site2", dist=tmp_path / "missing")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_app_config_points_ohif_at_orthanc_dicomweb_on_the_page_origin(tmp_path: Path) -> None:
    script = tmp_path / "config.js"
    script.write_text(
        "var window = {location: {origin: 'http://127.0.0.1:8042'}};\n"
        + app_config("ohif", "/dicom-web")
        + "\nconsole.log(JSON.stringify(window.config));\n"
    )
    config = json.loads(
        subprocess.run(["node", str(script)], capture_output=True, check=True, text=True).stdout
    )
    assert config["routerBasename"] == "/ohif"
    (source,) = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {"http://127.0.0.1:8042/dicom-web"}


def test_orthanc_config_maps_the_prefix_and_the_route_page(tmp_path: Path) -> None:
    if not viewer.SERVE_FOLDERS_PLUGIN.exists():
        pytest.skip("Orthanc's ServeFolders plugin is not installed")
    plain = orthanc_viewer_config(tmp_path / "site")
    assert plain["ServeFolders"]["Folders"] == {"/ohif": str((tmp_path / "site").resolve())}
    assert plain["ServeFolders"]["Extensions"][""] == "text/html"  # no dot in the path: "viewer"
    # A dotted folder (./.radgate): ServeFolders takes the text after the path's last dot.
    dotted = orthanc_viewer_config(tmp_path / ".radgate" / "pacs" / "ohif")
    assert dotted["ServeFolders"]["Extensions"][".radgate/pacs/ohif/viewer"] == "text/html"
    assert dotted["Plugins"] == [str(viewer.SERVE_FOLDERS_PLUGIN)]


def test_viewer_url_opens_the_study() -> None:
    url = viewer.viewer_url("http://127.0.0.1:8042/", "1.2.3.4")
    assert url == "http://127.0.0.1:8042/ohif/viewer?StudyInstanceUIDs=1.2.3.4"


def _tarball(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_install_checks_the_tarball_and_unpacks_dist_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "package/package.json": b"{}",
        "package/dist/index.html": INDEX.encode(),
        "package/dist/ort/huge.wasm": b"skipped",
        "package/dist/assets/logo.png": b"png",
    }
    tarball = tmp_path / "app.tgz"
    digest = _tarball(tarball, files)
    dest = tmp_path / "cache" / "dist"

    with pytest.raises(ViewerError, match="SHA-256"):  # the pinned digest is OHIF's, not this one
        install_ohif(dest, tarball)
    assert not dest.exists()

    monkeypatch.setattr(viewer, "OHIF_SHA256", digest)
    assert install_ohif(dest, tarball) == dest
    assert (dest / "index.html").read_text() == INDEX
    assert (dest / "assets" / "logo.png").read_bytes() == b"png"
    assert not (dest / "ort").exists() and not (dest.parent / "package.json").exists()
    tarball.unlink()  # installed: a second call does not need the tarball
    assert install_ohif(dest, tarball) == dest


def test_dist_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADGATE_OHIF_DIST", str(tmp_path / "ohif"))
    assert viewer.ohif_dist() == tmp_path / "ohif"
    monkeypatch.delenv("RADGATE_OHIF_DIST")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert viewer.ohif_dist() == tmp_path / "cache" / "radgate" / "ohif" / viewer.OHIF_VERSION / "dist"
