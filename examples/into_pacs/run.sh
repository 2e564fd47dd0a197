#!/usr/bin/env bash
# A DICOM series from PACS in, a DICOM SEG and an RTSTRUCT (plus organ statistics and a preview) out, ready to send back.
set -euo pipefail
: "${SERIES:?set SERIES to a folder holding the DICOM series (or a patient/study/series tree)}"
: "${CHECKPOINT:?set CHECKPOINT to a trained swinseg model (.safetensors)}"
OUT=${OUT:-pacs_out}

# 1. Segment: one Segmentation object per series, referencing its source images (study, frame of reference),
#    <case>_statistics.json (volumes in ml, HU under each organ, centroids), statistics.csv and <case>_preview.png.
swinseg predict "$SERIES" -c "$CHECKPOINT" -o "$OUT/" --output-type dicom-seg --statistics --preview ${PREDICT_ARGS:-}

# 2. The same masks as RT Structure Sets (contours), for radiotherapy planning systems:
swinseg predict "$SERIES" -c "$CHECKPOINT" -o "$OUT/rtstruct/" --output-type rtstruct ${PREDICT_ARGS:-}

# 3. Send the SEG files back next to their series, e.g. with DCMTK (not installed by swinseg):
#      storescu -aec PACS_AE PACS_HOST 104 "$OUT"/*.dcm
ls "$OUT"
