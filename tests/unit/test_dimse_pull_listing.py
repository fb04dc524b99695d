"""The DIMSE pull's listing: a C-FIND answer that falls short of the series' own instance count
is asked again and then refused, instead of pulling part of a series and reporting success.
A real pynetdicom Query/Retrieve SCP on 127.0.0.1 plays the PACS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from imaging.gateway.config import PacsPeer
from imaging.gateway.dimse_pull import DimseSource
from imaging.gateway.pull_source import PullError

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


class FakeListingPacs:
    """Answers series-level C-FINDs with ``announced`` related instances and image-level
    C-FINDs with ``listings[i]`` instances on the i-th ask (the last one repeats)."""

    def __init__(self, announced: int | None, listings: list[int]) -> None:
        self.announced, self.listings, self.image_asks = announced, listings, 0
        ae = AE(ae_title="FAKEPACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)]
        )
        assert server is not None  # block=False returns the running server
        self.server = server
        self.port = int(self.server.server_address[1])

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Any]]:
        level = str(event.identifier.QueryRetrieveLevel)
        if level == "SERIES":
            match = Dataset()
            match.QueryRetrieveLevel = "SERIES"
            match.StudyInstanceUID, match.SeriesInstanceUID = STUDY, SERIES
            if self.announced is not None:
                match.NumberOfSeriesRelatedInstances = self.announced
            yield 0xFF00, match
        elif level == "IMAGE":
            count = self.listings[min(self.image_asks, len(self.listings) - 1)]
            self.image_asks += 1
            for index in range(count):
                match = Dataset()
                match.QueryRetrieveLevel = "IMAGE"
                match.StudyInstanceUID, match.SeriesInstanceUID = STUDY, SERIES
                match.SOPInstanceUID, match.SOPClassUID = f"{SERIES}.{index + 1}", CT
                yield 0xFF00, match
        yield 0x0000, None

    def source(self) -> DimseSource:
        return DimseSource(PacsPeer(name="fake", ae_title="FAKEPACS", port=self.port), timeout=10)


@pytest.fixture
def pacs_factory() -> Iterator[Any]:
    started: list[FakeListingPacs] = []

    def make(announced: int | None, listings: list[int]) -> FakeListingPacs:
        started.append(FakeListingPacs(announced, listings))
        return started[-1]

    yield make
    for pacs in started:
        pacs.server.shutdown()


def test_a_complete_listing_is_returned(pacs_factory: Any) -> None:
    pacs = pacs_factory(3, [3])
    source = pacs.source()
    try:
        refs = source.search_instances(STUDY)
    finally:
        source.close()
    assert [ref.sop for ref in refs] == [f"{SERIES}.{n}" for n in (1, 2, 3)]
    assert pacs.image_asks == 1


def test_a_short_listing_is_asked_again(pacs_factory: Any) -> None:
    pacs = pacs_factory(3, [2, 3])
    source = pacs.source()
    try:
        refs = source.search_instances(STUDY)
    finally:
        source.close()
    assert len(refs) == 3 and pacs.image_asks == 2


def test_a_listing_that_stays_short_is_an_error_without_identifiers(pacs_factory: Any) -> None:
    pacs = pacs_factory(3, [2])
    source = pacs.source()
    try:
        with pytest.raises(PullError) as raised:
            source.search_instances(STUDY)
    finally:
        source.close()
    assert "2 of a series' 3 instances" in str(raised.value)
    assert STUDY not in str(raised.value) and SERIES not in str(raised.value)


def test_a_pacs_that_gives_no_count_is_taken_at_its_word(pacs_factory: Any) -> None:
    pacs = pacs_factory(None, [2])
    source = pacs.source()
    try:
        assert len(source.search_instances(STUDY)) == 2
    finally:
        source.close()
