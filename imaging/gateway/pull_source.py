"""What both pull sources (:class:`imaging.gateway.pull.DicomwebSource` and
:class:`imaging.gateway.dimse_pull.DimseSource`) share: the instance reference their searches
return and the error they raise. :func:`imaging.gateway.pull.pull` works on either."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InstanceRef", "PullError"]


class PullError(RuntimeError):
    """The PACS could not be queried or an instance could not be retrieved."""


@dataclass(frozen=True)
class InstanceRef:
    study: str
    series: str
    sop: str
