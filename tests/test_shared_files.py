"""The one rule for ../shared: tests skip only when the whole folder is absent, never for a single missing file."""
from __future__ import annotations

import re
from pathlib import Path

from shared_files import SHARED, needs_shared

TESTS = Path(__file__).resolve().parent
# what a skipif condition about ../shared would name: the folder, its paths, or a test's own file in it
ABOUT_SHARED = re.compile(r"shared|GOLDEN|EXAMPLE|CT_FOLDER|REAL_|CLASSIFIER|UNET|\.is_dir\(|\.is_file\(|\.exists\(",
                          re.IGNORECASE)


def test_needs_shared_skips_exactly_when_the_shared_folder_is_absent():
    assert needs_shared.name == "skipif"
    assert needs_shared.args == (not SHARED.is_dir(),)
    assert str(SHARED) in needs_shared.kwargs["reason"]
    assert SHARED == TESTS.parents[1] / "shared"


def test_no_test_module_has_its_own_skipif_about_shared():
    """Every skipif outside shared_files.py must be about something else (an optional package, a platform)."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "shared_files.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"skipif\(", text):
            condition = text[match.end():].split("reason", 1)[0][:300]  # the condition, up to `reason=`
            if ABOUT_SHARED.search(condition):
                offenders.append(f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}")
    assert not offenders, f"use `@needs_shared` from shared_files instead of a skipif at {offenders}"
