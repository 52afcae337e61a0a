"""The simulator's names for Ark model ids, read from the capability table (`chalicelib.ark.capabilities`); arkflow
itself reads the table, and this view stays only until `arksim/` does too."""

from __future__ import annotations

from chalicelib.ark.capabilities import MODELS, model

_VOLCENGINE = "volcengine"


def _volcengine_id(key: str) -> str:
    return model(key).providers[_VOLCENGINE].model_id


SEEDREAM_4_5 = _volcengine_id("seedream-4.5")
SEEDREAM_4_0 = _volcengine_id("seedream-4.0")
SEEDANCE_1_0_PRO = _volcengine_id("seedance-1.0-pro")
SEEDANCE_1_0_PRO_FAST = _volcengine_id("seedance-1.0-pro-fast")

IMAGE_MODELS = tuple(entry.providers[_VOLCENGINE].model_id for entry in MODELS if entry.api == "image")
VIDEO_MODELS = tuple(entry.providers[_VOLCENGINE].model_id for entry in MODELS if entry.api == "video")
IMAGE_MODELS_WITH_1K = tuple(entry.providers[_VOLCENGINE].model_id for entry in MODELS
                             if entry.image is not None and "1K" in entry.image.size_presets)
VIDEO_MODELS_WITHOUT_LAST_FRAME = tuple(entry.providers[_VOLCENGINE].model_id for entry in MODELS
                                        if entry.video is not None and not entry.video.first_last_frame)
