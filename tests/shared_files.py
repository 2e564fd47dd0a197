"""Paths to the reference material in ../shared (next to the checkout) and the one marker for tests that need it.

The rule: a test skips only when the whole ../shared folder is absent (a checkout without it). A file missing
from a present ../shared makes the test fail, on opening the file, so a renamed or lost reference file can never
hide as a skip. Tests therefore mark themselves `@needs_shared` and never check for single files.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "reference" / "golden"
CT_FOLDER = SHARED / "data" / "ct_abdomen_a"
EXAMPLE_CT = CT_FOLDER / "example_ct.nii.gz"
EXAMPLE_SEG = CT_FOLDER / "example_seg_fast_force_split.nii.gz"

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"reference material not found at {SHARED} "
                                                              "(a checkout without ../shared)")
