#!/usr/bin/env python3
"""atheris fuzz target: parse + de-identify + encode must never raise, whatever the bytes.

    python tests/fuzz/fuzz_deid.py -max_total_time=600   # by hand, for minutes
The test suite runs it briefly (tests/unit/test_fuzz_deid.py). Seeds: real packaged DICOM.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from governance.keys import ProjectKey
    from imaging.deid import Deidentifier, load_profile
    from imaging.pipeline import Outcome, process_bytes, quiet_pydicom

quiet_pydicom()
KEY = ProjectKey(b"\x09" * 32)
PROFILE = load_profile("research")
ENGINE = Deidentifier(PROFILE, KEY)


def test_one_input(data: bytes) -> None:
    # process_bytes promises: never raises; an outcome and, if de-identified, encoded output.
    result = process_bytes(data, ENGINE, KEY, PROFILE)
    if result.outcome is Outcome.DEIDENTIFIED:
        assert result.output is not None and result.output[128:132] == b"DICM"
    else:
        assert result.reason is not None and result.output is None


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
