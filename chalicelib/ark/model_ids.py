"""Ark model IDs this platform calls (docs/ark.md, "Models") and which API each one serves."""

from __future__ import annotations

SEEDREAM_4_5 = "doubao-seedream-4-5-251128"
SEEDREAM_4_0 = "doubao-seedream-4-0-250828"
SEEDANCE_1_0_PRO = "doubao-seedance-1-0-pro-250528"
SEEDANCE_1_0_PRO_FAST = "doubao-seedance-1-0-pro-fast-251015"

IMAGE_MODELS = (SEEDREAM_4_5, SEEDREAM_4_0)
VIDEO_MODELS = (SEEDANCE_1_0_PRO, SEEDANCE_1_0_PRO_FAST)
# Seedream 4.0-family models also accept the `1K` size preset.
IMAGE_MODELS_WITH_1K = (SEEDREAM_4_0,)
# Seedance 1.0 pro fast has no first+last-frame mode.
VIDEO_MODELS_WITHOUT_LAST_FRAME = (SEEDANCE_1_0_PRO_FAST,)
