"""TextScrubber's token search (prefiltered in C) replaces what the plain token loop replaced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imaging.deid.scrub import TextScrubber, _replace_token

# ASCII, "*" (the replacement's character), and Greek sigmas (lowercased by context)
_ALPHABET = "abAB *-^.\u00e90 1\u03a3\u03c2\u03c3"


def _reference_clean(scrubber: TextScrubber, text: str) -> str:
    """The loop over every token, longest first (without the generic patterns)."""
    lowered = text.lower()
    for _token, low in scrubber.ordered:
        if low in lowered:
            text = _replace_token(text, lowered, low)
            lowered = text.lower()
    return text


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.text(_ALPHABET, min_size=1, max_size=8), min_size=1, max_size=5),
    text=st.text(_ALPHABET, max_size=40),
)
def test_clean_matches_the_token_loop(values: list[str], text: str) -> None:
    scrubber = TextScrubber.from_values(values)
    assert scrubber.clean(text, generic=False) == _reference_clean(scrubber, text)
    assert scrubber.mentions(text.lower()) == any(low in text.lower() for low in scrubber.lowered)


def test_names_and_parts_are_replaced_longest_first() -> None:
    scrubber = TextScrubber.from_values(["DOE^JOHN", "A*B"])
    assert scrubber.clean("Seen: John Doe, johnny, A*B", generic=False) == "Seen: *** ***, johnny, ***"
