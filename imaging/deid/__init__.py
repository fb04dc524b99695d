"""DICOM de-identification per PS3.15 Annex E, driven by Table E.1-1 (DICOM 2024b).

>>> from imaging.deid import Deidentifier, load_profile
>>> from governance.keys import load_project_key
>>> deid = Deidentifier(load_profile("research"), load_project_key())
>>> record = deid.deidentify(dataset)   # in place; raises QuarantineError when unsafe
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from imaging.deid.engine import Deidentifier, DeidRecord
    from imaging.deid.errors import DeidError, ProfileError, QuarantineError, QuarantineReason
    from imaging.deid.profile import DEFAULT_PROFILE, DeidProfile, load_profile
    from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind
    from imaging.deid.scrub import TextScrubber
    from imaging.deid.table import Action, Option, load_table

__all__ = [
    "DEFAULT_PROFILE",
    "Action",
    "DeidError",
    "DeidProfile",
    "DeidRecord",
    "Deidentifier",
    "Option",
    "ProfileError",
    "PseudonymKind",
    "Pseudonymizer",
    "QuarantineError",
    "QuarantineReason",
    "TextScrubber",
    "load_profile",
    "load_table",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
