"""Triton's gRPC endpoint over TLS (issue #22: TLS on every listener): the real tritonserver of
nvidia-pytriton with ``TritonServer(tls=...)`` (what ``radgate triton start --tls-*`` and
compose run). A plaintext client, a client that trusts another CA, and (mutual TLS) a client
without a certificate get nothing; RadGate's client with the stack's CA and its certificate is
answered, and ``TritonForward`` reaches Triton's model API through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from governance.tls import ClientTls, ServerTls, make_dev_certificates
from serving.triton.client import TritonForward, TritonModelMismatch, grpc_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from serving.triton import TritonNotInstalled, TritonServer, find_tritonserver

    try:
        find_tritonserver()
    except TritonNotInstalled as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("triton-tls")
    certs = make_dev_certificates(root / "tls")
    other = make_dev_certificates(root / "other-ca")
    (root / "repo").mkdir()
    server = TritonServer(
        root / "repo",
        root / "work",
        tls=ServerTls(
            certificate=certs.server_certificate,
            private_key=certs.server_key,
            ca_file=certs.ca_certificate,
            require_client_certificate=True,
        ),
    ).start()
    try:
        yield {"server": server, "certs": certs, "other": other}
    finally:
        server.stop()


def _live(client: Any) -> bool:
    from tritonclient.utils import InferenceServerException

    try:
        return bool(client.is_server_live(client_timeout=10))
    except InferenceServerException:
        return False


def test_plaintext_grpc_gets_nothing(tls_triton: dict[str, Any]) -> None:
    assert not _live(grpc_client(tls_triton["server"].grpc_url))


def test_a_client_that_trusts_another_ca_gets_nothing(tls_triton: dict[str, Any]) -> None:
    certs, other = tls_triton["certs"], tls_triton["other"]
    tls = ClientTls(
        ca_file=other.ca_certificate, certificate=certs.client_certificate, private_key=certs.client_key
    )
    assert not _live(grpc_client(tls_triton["server"].grpc_url, tls))


def test_a_client_without_a_certificate_gets_nothing(tls_triton: dict[str, Any]) -> None:
    tls = ClientTls(ca_file=tls_triton["certs"].ca_certificate)
    assert not _live(grpc_client(tls_triton["server"].grpc_url, tls))


def test_radgates_client_with_the_ca_and_its_certificate_is_answered(tls_triton: dict[str, Any]) -> None:
    certs = tls_triton["certs"]
    tls = ClientTls(
        ca_file=certs.ca_certificate, certificate=certs.client_certificate, private_key=certs.client_key
    )
    url = tls_triton["server"].grpc_url
    assert _live(grpc_client(url, tls))
    # The serving backend goes through the same channel: Triton itself answers that it has no
    # such model (over plaintext the same call could not reach it at all).
    with pytest.raises(TritonModelMismatch) as answered:
        TritonForward(url, "absent", "1", "0" * 64, tls=tls)
    assert "unknown model" in str(answered.value).lower() or "not found" in str(answered.value).lower()
    with pytest.raises(TritonModelMismatch) as unreachable:
        TritonForward(url, "absent", "1", "0" * 64)
    assert "unknown model" not in str(unreachable.value).lower()
