"""What tests send and who sends it: request bodies, the seeded users, images, and the principal or account id
of a user (read from the tables the test's AWS holds)."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

# The users `seeded` creates.
ADMIN = ("admin", "admin-pass")
DEMO = ("demo", "demo-pass")
OTHER = ("other", "other-pass")

IMAGE_MODEL, VIDEO_MODEL = "seedream-4.5", "seedance-1.0-pro"
IMAGE_TASK = {"type": "image", "model_id": IMAGE_MODEL, "prompt": "a red fox in snow"}
VIDEO_TASK = {"type": "video", "model_id": VIDEO_MODEL, "prompt": "waves", "params": {"duration": 5}}
# A 2 s clip: what the lanes' tests have the simulator make.
SHORT_VIDEO_TASK = {"type": "video", "model_id": VIDEO_MODEL, "prompt": "waves", "params": {"duration": 2}}


def png_bytes(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(width: int = 64, height: int = 64) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(width, height)).decode()


def user_id_of(username: str) -> str:
    """The account id of the user holding `username` now (what owns its tasks, quotas and sockets)."""
    from chalicelib.store.records import UserRecord

    user_id = UserRecord.get(username, consistent_read=True).user_id
    assert user_id
    return user_id


def principal_of(user: tuple[str, str]) -> Any:
    """A fresh login session of `user`, as the API authenticates its requests (`chalicelib.accounts.auth`)."""
    from chalicelib.accounts.auth import Authenticator

    authenticator = Authenticator()
    return authenticator.authenticate("Bearer " + authenticator.login(*user).token)
