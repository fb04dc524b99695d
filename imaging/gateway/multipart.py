"""``multipart/related`` (RFC 2387) as used by DICOMweb: parse request and response bodies,
build them for tests and clients. A body may be bytes or a memory map of a spooled file
(:func:`part_spans` locates the parts without copying them; a part is copied when it is used).
"""

from __future__ import annotations

import mmap
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "MultipartError",
    "Part",
    "PartSpan",
    "build_related",
    "content_type_params",
    "iter_parts",
    "part_spans",
]

Body = bytes | mmap.mmap


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


@dataclass(frozen=True)
class Part:
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``multipart/related; type="application/dicom"; boundary=x`` into media type and
    lower-cased parameter names with unquoted values."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in _split_params(rest):
        name, sep, val = item.partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[name.strip().lower()] = val
    return media.strip().lower(), params


def _split_params(text: str) -> Iterator[str]:
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            yield "".join(current)
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        yield "".join(current)


@dataclass(frozen=True)
class PartSpan:
    """Where one part's content lies in the body (``body[start:end]``), and its headers."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def iter_parts(body: Body, boundary: str) -> Iterator[Part]:
    """Yield the parts of ``body``; raises :class:`MultipartError` when it is malformed."""
    for span in part_spans(body, boundary):
        yield Part(span.headers, body[span.start : span.end])


def part_spans(body: Body, boundary: str) -> Iterator[PartSpan]:
    """Yield where each part of ``body`` lies, without copying it; raises
    :class:`MultipartError` when the body is malformed."""
    if not boundary or len(boundary) > 70:
        raise MultipartError("missing or invalid boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("no part found")
    position = start + len(delimiter)
    while True:
        if body[position : position + 2] == b"--":
            return  # close delimiter
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise MultipartError("truncated body")
        header_end = body.find(b"\r\n\r\n", line_end)
        if header_end < 0:
            raise MultipartError("part without header terminator")
        # header_end == line_end when the part has no headers at all
        headers = _parse_headers(body[line_end + 2 : header_end])
        content_start = header_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise MultipartError("missing close delimiter")
        yield PartSpan(headers, content_start, next_delimiter)
        position = next_delimiter + 2 + len(delimiter)


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def build_related(
    parts: Iterable[bytes], part_type: str = "application/dicom", boundary: str | None = None
) -> tuple[bytes, str]:
    """A ``multipart/related`` body and its Content-Type header value."""
    boundary = boundary or secrets.token_hex(16)
    chunks: list[bytes] = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'
