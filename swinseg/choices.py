"""The fixed choices of swinseg's options, defined once: the library checks values against them and the CLI
builds its option types from them (this module imports nothing, so the CLI stays fast to start)."""
from __future__ import annotations

PLANES = ("axial", "coronal", "sagittal")  # slicing planes (the card's `plane`, predict --axis)
PROTOCOLS = ("fast", "reference")  # predict --protocol
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # --precision
EVALUATION_PROTOCOLS = ("synapse-paper",)  # evaluate --protocol
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")  # predict --backend (auto: torch on CUDA, else fastest)
AUGMENTATIONS = ("none", "reference", "strong")  # train --augment
MIRRORS = ("auto", "both", "rows", "columns", "none")  # train --mirror (auto: swinseg.plan decides)
OUTPUT_TYPES = ("auto", "dicom-seg", "rtstruct")  # predict --output-type: auto = NIfTI (PNG for 2-D images)
DICOM_TYPES = ("seg", "rtstruct")  # to-dicom --output-type
SERVE_OUTPUT_TYPES = ("seg", "rtstruct", "nifti")  # serve --output-type
# --min-contour-area (mm²): regions and holes of a slice enclosing less are left out of an RTSTRUCT. About
# 2.2 x 2.2 mm, under a planning dose grid voxel (2-3 mm) and a CT slice's thickness; 5-20 pixels of a 512x512
# slice. This is the speckle of an undertrained network: a mask of random labels on 0.7 mm pixels still gave 1,200
# contours per class and slice at 2 mm² (170 MB for 100 slices), 50 at 5 mm² (7 MB).
MIN_CONTOUR_AREA = 5.0

HD95_DEFINITIONS = {  # evaluate --hd95
    "medpy": "95th percentile (numpy linear interpolation) of the pooled surface distances of both directions "
    "(medpy.metric.binary.hd95; what the Swin-Unet and TransUNet papers report)",
    "max": "larger of the two directed 95th percentiles (numpy linear interpolation), as MONAI and "
    "DeepMind surface-distance",
}
EMPTY_POLICIES = {  # evaluate --empty
    "worst": "both empty: Dice 1, IoU 1, HD95 0, ASSD 0; exactly one empty: Dice 0, IoU 0, HD95 and ASSD = "
    "the reference image's diagonal (flagged)",
    "nan": "undefined values are NaN (both empty: all NaN; one empty: Dice 0, IoU 0, HD95/ASSD NaN), "
    "left out of means and counted",
    "paper": "Swin-Unet/TransUNet: prediction non-empty and reference empty -> Dice 1, HD95 0; prediction "
    "empty -> Dice 0, HD95 0 (IoU and ASSD follow Dice and HD95)",
}
