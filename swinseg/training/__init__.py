"""Training, beside the inference path: dataset layouts (`datasets`), training inputs (`data`), augmentation
(`augment`), losses (`losses`), options and recipes (`options`), the loop (`loop`: `train`), its resumable state
(`state`) and progress events (`report`), cross-validation (`crossval`) and NIfTI-to-Synapse conversion
(`convert`). Planning the data choices is `swinseg.plan`'s job; it is shared with the card a model carries.

Modules are imported by name (`from swinseg.training.loop import train`); this package imports nothing, so the
CLI can read `swinseg.training.options` without torch.
"""
