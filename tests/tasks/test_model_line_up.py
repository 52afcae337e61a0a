"""The Ark line-up as users and admins meet it: requests judged per model, every new field sent to Ark in its shape,
lifecycle (deprecated warnings, retired refusals), upstream changes with queued tasks, drafts rendered in full, and
Ark's answer that a model is not there."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib import catalog
from chalicelib.ark import capabilities
from chalicelib.ark.answers import GeneratedImage, ImageGenerationResult, ImageUsage, ToolUsage, VideoTask
from chalicelib.ark.client import VolcImageClient, VolcVideoClient
from chalicelib.ark.errors import ArkNotFoundError
from chalicelib.clock import iso
from chalicelib.store.records import TaskRecord
from tests.api_client import Api
from tests.factories import ADMIN, DEMO, OTHER
from tests.lane_fixtures import ARK_KEY, Lanes


def ark_id(family: str, provider: str = "volcengine") -> str:
    return capabilities.model(family).providers[provider].model_id  # type: ignore[index]


def add_model(api: Api, model_id: str, family: str, **fields: Any) -> dict[str, Any]:
    body = {"model_id": model_id, "type": capabilities.model(family).api, "upstream_model": ark_id(family),
            "concurrency": 2, "daily_quota": 100, **fields}
    response = api.request("POST", "/api/admin/models", body, as_user=ADMIN)
    assert response.status_code == 201, response.body
    return response.data


def create(api: Api, body: dict[str, Any], user: tuple[str, str] = DEMO) -> Any:
    return api.request("POST", "/api/tasks", body, as_user=user)


def image(model_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": "image", "model_id": model_id, "prompt": "a lighthouse at dusk", **fields}


def video(model_id: str, params: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"type": "video", "model_id": model_id, "prompt": "waves at dusk", "params": params or {}, **fields}


def problems(response: Any) -> dict[str, dict[str, str]]:
    assert response.status_code == 400, response.body
    return {detail["field"]: detail for detail in response.data["error"]["details"]}


def usage_today(api: Api, model_id: str) -> int:
    return api.request("GET", f"/api/admin/models/{model_id}", as_user=ADMIN).data["usage_today"]["used"]


def at_byteplus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "provider", lambda: capabilities.provider_of(
        "https://ark.ap-southeast.bytepluses.com/api/v3"))


# --- what clients are shown ----------------------------------------------------------------------------------------


def test_every_model_body_carries_its_capabilities_and_lifecycle(api: Api) -> None:
    listed = {model["model_id"]: model for model in api.request("GET", "/api/models", as_user=DEMO).data["models"]}
    lite, pro15, pro10 = listed["seedream-5.0-lite"], listed["seedance-1.5-pro"], listed["seedance-1.0-pro"]
    assert lite["capabilities"]["fields"]["size"]["presets"] == ["2K", "3K"]
    assert lite["capabilities"]["fields"]["output_format"] == {"type": "enum", "values": ["jpeg", "png"],
                                                               "default": "jpeg"}
    assert "tools" in lite["capabilities"]["fields"]
    assert "output_format" not in listed["seedream-4.5"]["capabilities"]["fields"]
    assert pro15["capabilities"]["fields"]["params.generate_audio"]["default"] is True
    assert pro15["capabilities"]["fields"]["params.draft"]["requires"] == {"params.resolution": "480p"}
    assert pro15["capabilities"]["fields"]["params.duration"] | {} == {
        "type": "integer", "min": 4, "max": 12, "default": 5, "auto": -1}
    assert "params.generate_audio" not in pro10["capabilities"]["fields"]
    assert [mode["mode"] for mode in listed["seedance-2.0"]["capabilities"]["input_modes"]] == [
        "text", "first_frame", "first_last_frame", "references"]
    assert all((model["status"], model["replacement"]) == ("active", None) for model in listed.values())
    assert "doubao" not in str(listed)  # users never see upstream ids

    admin = api.request("GET", "/api/admin/models/seedance-2.0", as_user=ADMIN).data
    assert (admin["family"], admin["upstream_model"], admin["upstream_unavailable"]) == (
        "seedance-2.0", ark_id("seedance-2.0"), None)
    assert admin["capabilities"] == listed["seedance-2.0"]["capabilities"]
    table = api.request("GET", "/api/admin/ark-models", as_user=ADMIN).data
    assert {entry["family"] for entry in table["ark_models"]} >= {
        "seedream-4.0", "seedream-4.5", "seedream-5.0-lite", "seedance-1.0-lite-t2v", "seedance-1.0-lite-i2v",
        "seedance-1.0-pro", "seedance-1.0-pro-fast", "seedance-1.5-pro", "seedance-2.0", "seedance-2.0-fast"}


# --- requests judged per model -------------------------------------------------------------------------------------


def test_size_presets_and_pixel_ranges_are_the_models_own(api: Api) -> None:
    add_model(api, "seedream-4.0", "seedream-4.0")
    assert create(api, image("seedream-4.0", size="1K")).status_code == 201
    assert create(api, image("seedream-4.0", size="1280x720")).status_code == 201  # 4.0's range starts at 921,600
    assert create(api, image("seedream-5.0-lite", size="3k")).status_code == 201
    refused = problems(create(api, image("seedream-4.5", size="1K")))
    assert set(refused) == {"size"} and "2K or 4K" in refused["size"]["message"]
    assert set(problems(create(api, image("seedream-4.5", size="3K")))) == {"size"}
    assert set(problems(create(api, image("seedream-4.5", size="1280x720")))) == {"size"}


def test_fields_a_model_lacks_are_named_as_unsupported_beside_every_other_bad_field(api: Api) -> None:
    refused = problems(create(api, image("seedream-4.5", output_format="png", tools=[{"type": "web_search"}],
                                         max_images=16)))
    assert {field: detail["type"] for field, detail in refused.items()} == {
        "output_format": "unsupported", "tools": "unsupported", "max_images": "max_images"}

    refused = problems(create(api, video("seedance-1.0-pro", {
        "generate_audio": True, "draft": True, "priority": 3, "duration": -1, "resolution": "4k"})))
    assert {field: detail["type"] for field, detail in refused.items()} == {
        "params.generate_audio": "unsupported", "params.draft": "unsupported", "params.priority": "unsupported",
        "params.duration": "duration", "params.resolution": "resolution"}

    refused = problems(create(api, video("seedance-2.0", {"seed": 7, "camera_fixed": True, "frames": 121,
                                                          "service_tier": "flex"})))
    assert {field: detail["type"] for field, detail in refused.items()} == {
        "params.seed": "unsupported", "params.camera_fixed": "unsupported", "params.frames": "unsupported",
        "params.service_tier": "unsupported"}
    assert "Seedance 2.0" in refused["params.seed"]["message"]

    assert create(api, image("seedream-5.0-lite", output_format="png", tools=[{"type": "web_search"}])
                  ).status_code == 201
    assert set(problems(create(api, image("seedream-5.0-lite", output_format="gif")))) == {"output_format"}


def test_video_fields_follow_each_models_rules(api: Api) -> None:
    assert create(api, video("seedance-1.5-pro", {"duration": -1, "generate_audio": False,
                                                  "service_tier": "flex"})).status_code == 201
    assert create(api, video("seedance-2.0", {"duration": 15, "priority": 9, "ratio": "adaptive"})).status_code == 201
    assert set(problems(create(api, video("seedance-1.5-pro", {"duration": 15})))) == {"params.duration"}
    draft = problems(create(api, video("seedance-1.5-pro", {"draft": True, "resolution": "720p",
                                                            "return_last_frame": True, "service_tier": "flex"})))
    assert set(draft) == {"params.resolution", "params.return_last_frame", "params.service_tier"}
    assert set(problems(create(api, video("seedance-2.0", {"priority": 10})))) == {"params.priority"}
    assert set(problems(create(api, video("seedance-2.0", {"execution_expires_after": 60})))) == {
        "params.execution_expires_after"}


def test_reference_media_counts_and_rules_per_model(api: Api) -> None:
    picture = "https://images.example.com/cat.png"
    refs = [{"type": "image", "url": picture}, {"type": "video", "url": "https://v.example.com/a.mp4"},
            {"type": "audio", "url": "asset://asset-123"}]
    assert create(api, video("seedance-2.0", references=refs)).status_code == 201

    mixed = problems(create(api, video("seedance-2.0", references=refs[:1], images=[picture])))
    assert set(mixed) == {"references"} and mixed["references"]["type"] == "mixed_inputs"
    too_many = [{"type": "video", "url": f"https://v.example.com/{index}.mp4"} for index in range(4)]
    assert problems(create(api, video("seedance-2.0", references=too_many)))["references"]["type"] == \
        "too_many_references"
    alone = problems(create(api, video("seedance-2.0", references=refs[2:])))
    assert alone["references"]["type"] == "audio_alone"
    assert problems(create(api, video("seedance-1.0-pro", references=refs[:1])))["references"]["type"] == \
        "unsupported"
    bad_urls = problems(create(api, video("seedance-2.0", references=[
        {"type": "video", "url": "http://v.example.com/a.mp4"}, {"type": "image", "url": "data:image/png;base64,x"},
        {"type": "sound", "url": picture}])))
    assert set(bad_urls) == {"references[0].url", "references[1].url", "references[2].type"}


# --- what reaches Ark --------------------------------------------------------------------------------------------


class RecordingVideos(VolcVideoClient):
    """Takes every create without calling Ark and keeps what was sent."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", ARK_KEY)
        self.creates: list[dict[str, Any]] = []

    def create_video_task(self, content: list[dict[str, Any]], model: str = "", callback_url: str | None = None,
                          **fields: Any) -> str:
        self.creates.append({"content": content, "model": model, **fields})
        return f"cgt-20260101000000-{len(self.creates):05d}"


class RecordingImages(VolcImageClient):
    def __init__(self, usage: ImageUsage | None = None, error: Exception | None = None) -> None:
        super().__init__("http://127.0.0.1:9", ARK_KEY)
        self.calls: list[dict[str, Any]] = []
        self.usage, self.error = usage, error

    def create_image_task(self, prompt: str, images: list[str] | None = None, size: str | None = None,
                          model: str = "", **fields: Any) -> ImageGenerationResult:
        self.calls.append({"prompt": prompt, "images": images, "size": size, "model": model, **fields})
        if self.error:
            raise self.error
        return ImageGenerationResult(model=model, created=0, errors=[], usage=self.usage, images=[
            GeneratedImage(url="https://results.example.com/0.png", size="2048x2048")])


def test_new_video_fields_and_reference_media_reach_ark_in_its_shape(lanes: Lanes) -> None:
    ark = RecordingVideos()
    lanes.submit(video("seedance-1.5-pro", {"generate_audio": False, "duration": -1, "service_tier": "flex",
                                            "execution_expires_after": 3600}))
    lanes.run("video", video_client=ark)
    sent = ark.creates[-1]
    assert sent["model"] == ark_id("seedance-1.5-pro")
    assert (sent["generate_audio"], sent["duration"], sent["service_tier"], sent["execution_expires_after"]) == (
        False, -1, "flex", 3600)
    assert isinstance(sent["seed"], int)  # 1.5 pro takes a seed

    lanes.submit(video("seedance-2.0", {"priority": 4}, references=[
        {"type": "image", "url": "https://images.example.com/cat.png"},
        {"type": "video", "url": "https://v.example.com/a.mp4"}, {"type": "audio", "url": "asset://voice-1"}]))
    lanes.run("video", video_client=ark)
    sent = ark.creates[-1]
    assert sent["priority"] == 4 and "seed" not in sent  # 2.0 takes no seed: none is sent
    assert sent["content"] == [
        {"type": "text", "text": "waves at dusk"},
        {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.png"}, "role": "reference_image"},
        {"type": "video_url", "video_url": {"url": "https://v.example.com/a.mp4"}, "role": "reference_video"},
        {"type": "audio_url", "audio_url": {"url": "asset://voice-1"}, "role": "reference_audio"},
    ]


def test_a_reference_image_may_name_an_asset_of_the_account(lanes: Lanes) -> None:
    """Ark takes a real person's face only from a trusted asset of the account's media library."""
    ark = RecordingVideos()
    task_id = lanes.submit(video("seedance-2.0", references=[{"type": "image", "url": "asset://asset-portrait-1"}]))
    lanes.run("video", video_client=ark)
    assert ark.creates[-1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "asset://asset-portrait-1"}, "role": "reference_image"}
    assert lanes.get(task_id)["references"] == [{"type": "image", "url": "asset://asset-portrait-1"}]


def test_png_and_web_search_reach_ark_and_the_result_carries_the_tool_count(lanes: Lanes) -> None:
    ark = RecordingImages(usage=ImageUsage(generated_images=1, output_tokens=16384, total_tokens=16384,
                                           tool_usage=ToolUsage(web_search=2)))
    task_id = lanes.submit(image("seedream-5.0-lite", output_format="png", tools=[{"type": "web_search"}]))
    lanes.run("image", image_client=ark)
    assert (ark.calls[0]["output_format"], ark.calls[0]["tools"]) == ("png", ["web_search"])
    result = lanes.get(task_id)["result"]
    assert result["format"] == "png" and result["usage"]["tool_usage"] == {"web_search": 2}


# --- lifecycle -------------------------------------------------------------------------------------------------


def test_a_deprecated_model_warns_admins_and_users(api: Api) -> None:
    add_model(api, "seedream-4.0", "seedream-4.0")  # deprecated at Volcengine, replaced by 4.5
    admin = api.request("GET", "/api/admin/models/seedream-4.0", as_user=ADMIN).data
    assert (admin["status"], admin["replacement"]) == ("deprecated", "seedream-4.5")
    created = create(api, image("seedream-4.0"))
    assert created.status_code == 201
    [warning] = created.data["warnings"]
    assert (warning["code"], warning["replacement"]) == ("model_deprecated", "seedream-4.5")
    assert "Seedream 4.5" in warning["message"]
    assert api.request("GET", f"/api/tasks/{created.data['id']}", as_user=DEMO).data["warnings"] == [warning]
    active = create(api, image("seedream-4.5"))
    assert "warnings" not in active.data
    assert api.request("GET", f"/api/tasks/{active.data['id']}", as_user=DEMO).data["warnings"] == []


def test_a_retired_model_refuses_new_tasks_naming_its_replacement(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    add_model(api, "lite", "seedance-1.0-lite-t2v")  # deprecated at Volcengine; the deployment then moves
    monkeypatch.setenv("ARK_BASE_URL", "https://ark.ap-southeast.bytepluses.com/api/v3")
    at_byteplus(monkeypatch)  # to BytePlus, which retired it
    admin = api.request("GET", "/api/admin/models/lite", as_user=ADMIN).data
    assert (admin["status"], admin["warnings"][0]["code"]) == ("retired", "model_retired")
    refused = create(api, video("lite"))
    assert refused.status_code == 409
    assert refused.data["error"]["code"] == "model_retired"
    assert refused.data["error"]["details"] == {"replacement": "seedance-1.0-pro-fast"}
    assert usage_today(api, "lite") == 0


# --- admin configuration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"upstream_model": "doubao-seedance-9-9-999999"}, "upstream_model"),
    ({"upstream_model": "ep-20260101000000-abcde"}, "family"),
    ({"upstream_model": "ep-20260101000000-abcde", "family": "seedance-7"}, "family"),
    ({"upstream_model": ark_id("seedream-4.5")}, "upstream_model"),  # an image model for a video model
    ({"family": "seedance-2.0"}, "family"),  # not what the Ark id names
])
def test_an_upstream_the_table_does_not_know_is_refused_naming_the_field(api: Api, change: dict, field: str) -> None:
    response = api.request("PUT", "/api/admin/models/seedance-1.0-pro", change, as_user=ADMIN)
    assert field in problems(response)
    assert api.request("GET", "/api/admin/models/seedance-1.0-pro", as_user=ADMIN).data["upstream_model"] == \
        ark_id("seedance-1.0-pro")


def test_an_endpoint_names_the_model_it_serves(api: Api) -> None:
    changed = api.request("PUT", "/api/admin/models/seedance-1.0-pro",
                          {"upstream_model": "ep-20260101000000-abcde", "family": "seedance-1.5-pro"}, as_user=ADMIN)
    assert changed.status_code == 200, changed.body
    assert (changed.data["family"], changed.data["capabilities"]["family"]) == ("seedance-1.5-pro",
                                                                               "seedance-1.5-pro")
    assert create(api, video("seedance-1.0-pro", {"generate_audio": True})).status_code == 201


def test_an_update_that_repeats_the_upstream_changes_only_what_it_changes(
        lanes: Lanes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin page sends `upstream_model` with every edit: an endpoint's family, a flag of Ark's 404 and a model
    its provider retired since must all survive an edit of its concurrency."""
    api = lanes.api
    endpoint = {"upstream_model": "ep-20260101000000-abcde", "family": "seedance-1.5-pro"}
    assert api.request("PUT", "/api/admin/models/seedance-1.0-pro", endpoint, as_user=ADMIN).status_code == 200
    edited = api.request("PUT", "/api/admin/models/seedance-1.0-pro",
                         {"upstream_model": endpoint["upstream_model"], "concurrency": 3}, as_user=ADMIN)
    assert edited.status_code == 200, edited.body
    assert (edited.data["family"], edited.data["concurrency"]) == ("seedance-1.5-pro", 3)

    missing = RecordingImages(error=ArkNotFoundError("ModelNotOpen", "model is not activated", 404))
    lanes.submit(image("seedream-5.0-lite"))
    lanes.run("image", image_client=missing)
    edited = api.request("PUT", "/api/admin/models/seedream-5.0-lite",
                         {"upstream_model": ark_id("seedream-5.0-lite"), "concurrency": 1}, as_user=ADMIN)
    assert edited.status_code == 200, edited.body
    assert edited.data["upstream_unavailable"]["code"] == "ModelNotOpen"  # nothing was done about it

    add_model(api, "lite", "seedance-1.0-lite-t2v")
    at_byteplus(monkeypatch)  # which retired it since
    edited = api.request("PUT", "/api/admin/models/lite",
                         {"upstream_model": ark_id("seedance-1.0-lite-t2v"), "enabled": False}, as_user=ADMIN)
    assert edited.status_code == 200, edited.body


def test_an_upstream_change_takes_queued_tasks_along_or_fails_the_incompatible_with_force(api: Api) -> None:
    fits = create(api, video("seedance-1.5-pro", {"duration": 8})).data["id"]
    needs_audio = create(api, video("seedance-1.5-pro", {"generate_audio": True})).data["id"]
    draft = create(api, video("seedance-1.5-pro", {"draft": True})).data["id"]
    assert usage_today(api, "seedance-1.5-pro") == 3
    change = {"upstream_model": ark_id("seedance-1.0-pro")}

    refused = api.request("PUT", "/api/admin/models/seedance-1.5-pro", change, as_user=ADMIN)
    assert refused.status_code == 409 and refused.data["error"]["code"] == "incompatible_queued_tasks"
    assert refused.data["error"]["details"]["count"] == 2
    assert set(refused.data["error"]["details"]["task_ids"]) == {needs_audio, draft}
    assert TaskRecord.get(fits).upstream_model == ark_id("seedance-1.5-pro")  # nothing moved

    forced = api.request("PUT", "/api/admin/models/seedance-1.5-pro", {**change, "force": True}, as_user=ADMIN)
    assert forced.status_code == 200, forced.body
    assert forced.data["family"] == "seedance-1.0-pro"
    for task_id in (needs_audio, draft):
        body = api.request("GET", f"/api/tasks/{task_id}", as_user=DEMO).data
        assert (body["status"], body["error"]["code"]) == ("failed", "incompatible_upstream")
        assert "generate_audio" in body["error"]["message"] or "draft" in body["error"]["message"]
    moved = TaskRecord.get(fits)
    assert (moved.status, moved.upstream_model, moved.family) == ("queued", ark_id("seedance-1.0-pro"),
                                                                  "seedance-1.0-pro")
    assert usage_today(api, "seedance-1.5-pro") == 1  # the two failed ones gave their quota back


@pytest.mark.parametrize("body", [
    {"force": True},
    {"force": True, "concurrency": 3},
    {"force": True, "upstream_model": ark_id("seedance-1.5-pro")},  # the upstream it calls already
])
def test_force_without_an_upstream_change_is_refused_naming_it(api: Api, body: dict[str, Any]) -> None:
    before = api.request("GET", "/api/admin/models/seedance-1.5-pro", as_user=ADMIN).data
    refused = api.request("PUT", "/api/admin/models/seedance-1.5-pro", body, as_user=ADMIN)
    assert problems(refused)["force"]["message"] == "force only applies to an upstream change"
    after = api.request("GET", "/api/admin/models/seedance-1.5-pro", as_user=ADMIN).data
    assert (after["concurrency"], after["updated_at"]) == (before["concurrency"], before["updated_at"])
    assert api.request("PUT", "/api/admin/models/seedance-1.5-pro", {"force": False, "concurrency": 3},
                       as_user=ADMIN).status_code == 200

def test_defaults_must_fit_the_models_upstream(api: Api) -> None:
    response = api.request("PUT", "/api/admin/models/seedance-1.0-pro", {"defaults": {"generate_audio": True}},
                           as_user=ADMIN)
    assert problems(response)["defaults.generate_audio"]["type"] == "unsupported"
    assert api.request("PUT", "/api/admin/models/seedance-1.5-pro", {"defaults": {"generate_audio": False}},
                       as_user=ADMIN).status_code == 200
    moving = api.request("PUT", "/api/admin/models/seedance-1.5-pro",
                         {"upstream_model": ark_id("seedance-1.0-pro")}, as_user=ADMIN)
    assert set(problems(moving)) == {"defaults.generate_audio"}


# --- drafts ----------------------------------------------------------------------------------------------------


def succeed_at_ark(lanes: Lanes, task_id: str, **echoed: Any) -> None:
    task = lanes.task(task_id)
    remote = VideoTask(id=task.external_id, model=task.upstream_model, status="succeeded", created_at=1,
                       video_url="https://results.example.com/v.mp4", **echoed)
    lanes.video().apply_remote(task, remote)


def test_a_succeeded_draft_is_rendered_in_full_from_its_ark_id(lanes: Lanes) -> None:
    ark = RecordingVideos()
    draft = lanes.submit(video("seedance-1.5-pro", {"draft": True, "generate_audio": True}))
    assert lanes.task(draft).params["resolution"] == "480p"  # the only resolution a draft has
    too_early = lanes.api.request("POST", f"/api/tasks/{draft}/render", as_user=DEMO)
    assert too_early.status_code == 409 and too_early.data["error"]["code"] == "draft_not_succeeded"

    lanes.run("video", video_client=ark)
    assert ark.creates[0]["draft"] is True and ark.creates[0]["resolution"] == "480p"
    succeed_at_ark(lanes, draft, draft=True, generate_audio=True)
    assert lanes.get(draft)["result"]["generate_audio"] is True
    assert lanes.api.request("POST", f"/api/tasks/{draft}/render", as_user=OTHER).status_code == 404

    rendered = lanes.api.request("POST", f"/api/tasks/{draft}/render", {"params": {"resolution": "720p"}},
                                 as_user=DEMO)
    assert rendered.status_code == 201, rendered.body
    assert rendered.data["render_of"] == draft
    lanes.run("video", video_client=ark)
    sent = ark.creates[-1]
    assert sent["content"] == [{"type": "draft_task", "draft_task": {"id": lanes.task(draft).external_id}}]
    assert sent["resolution"] == "720p" and "draft" not in sent and "seed" not in sent
    assert lanes.get(rendered.data["id"])["render_of"] == draft

    bad = lanes.api.request("POST", f"/api/tasks/{draft}/render", {"params": {"generate_audio": False}},
                            as_user=DEMO)
    assert bad.status_code == 400  # a render reuses the draft's audio: it is no field of a render


def test_a_draft_ark_no_longer_keeps_is_refused_before_it_takes_quota(lanes: Lanes) -> None:
    """Ark keeps a task 7 days: a render of an older draft could only fail there."""
    draft = lanes.submit(video("seedance-1.5-pro", {"draft": True}))
    lanes.run("video", video_client=RecordingVideos())
    succeed_at_ark(lanes, draft, draft=True)
    week_old = iso(time.time() - capabilities.VIDEO_TASK_RETENTION_S - 60)
    lanes.task(draft).update(actions=[TaskRecord.created_at.set(week_old)])
    refused = lanes.api.request("POST", f"/api/tasks/{draft}/render", as_user=DEMO)
    assert refused.status_code == 409 and refused.data["error"]["code"] == "draft_expired"
    assert usage_today(lanes.api, "seedance-1.5-pro") == 1  # the draft's own


def test_only_a_draft_can_be_rendered(lanes: Lanes) -> None:
    ark = RecordingVideos()
    full = lanes.submit(video("seedance-1.5-pro"))
    lanes.run("video", video_client=ark)
    succeed_at_ark(lanes, full)
    refused = lanes.api.request("POST", f"/api/tasks/{full}/render", as_user=DEMO)
    assert refused.status_code == 409 and refused.data["error"]["code"] == "not_a_draft"


# --- Ark's answer that the model is not there ----------------------------------------------------------------


def test_a_model_ark_does_not_open_fails_its_task_gives_quota_back_and_flags_the_model(lanes: Lanes) -> None:
    api = lanes.api
    missing = RecordingImages(error=ArkNotFoundError("ModelNotOpen", "model is not activated for ep-x", 404))
    task_id = lanes.submit(image("seedream-5.0-lite"))
    lanes.run("image", image_client=missing)

    body = lanes.get(task_id)
    assert (body["status"], body["error"]["code"]) == ("failed", "model_unavailable")
    assert "ep-x" not in str(body)
    assert usage_today(api, "seedream-5.0-lite") == 0
    flagged = api.request("GET", "/api/admin/models/seedream-5.0-lite", as_user=ADMIN).data["upstream_unavailable"]
    assert flagged["code"] == "ModelNotOpen" and flagged["at"]

    lanes.submit(image("seedream-5.0-lite"))
    lanes.run("image", image_client=RecordingImages())
    assert api.request("GET", "/api/admin/models/seedream-5.0-lite",
                       as_user=ADMIN).data["upstream_unavailable"] is None  # the next call Ark took cleared it


def test_an_upstream_change_clears_the_unavailable_flag(lanes: Lanes) -> None:
    missing = RecordingVideos()
    missing.create_video_task = lambda *args, **kwargs: (_ for _ in ()).throw(  # type: ignore[method-assign]
        ArkNotFoundError("InvalidEndpointOrModel.NotFound", "no such model", 404))
    task_id = lanes.submit(video("seedance-2.0"))
    lanes.run("video", video_client=missing)
    assert lanes.get(task_id)["error"]["code"] == "model_unavailable"
    admin = lanes.api.request("GET", "/api/admin/models/seedance-2.0", as_user=ADMIN).data
    assert admin["upstream_unavailable"]["code"] == "InvalidEndpointOrModel.NotFound"
    lanes.set_model("seedance-2.0", upstream_model=ark_id("seedance-2.0-fast"))
    assert lanes.api.request("GET", "/api/admin/models/seedance-2.0",
                             as_user=ADMIN).data["upstream_unavailable"] is None


def test_a_task_created_while_its_model_changes_upstream_is_refused_not_left_on_the_old_one(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream change moves the tasks it finds queued; one whose create read the model before the change and
    commits after it would keep the old upstream unseen: its transaction checks the upstream it read."""
    real_params_of = catalog.params_of

    def params_then_change(*args: Any) -> dict[str, Any]:
        params = real_params_of(*args)
        changed = api.request("PUT", "/api/admin/models/seedance-1.5-pro",
                              {"upstream_model": ark_id("seedance-2.0")}, as_user=ADMIN)
        assert changed.status_code == 200, changed.body
        return params

    monkeypatch.setattr(catalog, "params_of", params_then_change)
    refused = create(api, video("seedance-1.5-pro", {"duration": 6}))
    assert refused.status_code == 409 and refused.data["error"]["code"] == "model_changed"
    assert [task.upstream_model for task in TaskRecord.scan()] == []
    assert usage_today(api, "seedance-1.5-pro") == 0



def test_two_upstream_changes_at_once_leave_every_queued_task_on_the_winners_upstream(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first change has written the model when a second one changes it again and moves the tasks; the first
    one's move, which comes last, must not take them back to its upstream."""
    queued = create(api, video("seedance-1.5-pro", {"duration": 5})).data["id"]
    real_move = catalog._move_queued_tasks

    def second_change_first(*args: Any) -> None:
        monkeypatch.setattr(catalog, "_move_queued_tasks", real_move)
        second = api.request("PUT", "/api/admin/models/seedance-1.5-pro",
                             {"upstream_model": ark_id("seedance-1.0-pro")}, as_user=ADMIN)
        assert second.status_code == 200, second.body
        real_move(*args)

    monkeypatch.setattr(catalog, "_move_queued_tasks", second_change_first)
    first = api.request("PUT", "/api/admin/models/seedance-1.5-pro", {"upstream_model": ark_id("seedance-2.0")},
                        as_user=ADMIN)
    assert first.status_code == 200, first.body
    model = api.request("GET", "/api/admin/models/seedance-1.5-pro", as_user=ADMIN).data
    task = TaskRecord.get(queued)
    assert (model["upstream_model"], model["family"]) == (ark_id("seedance-1.0-pro"), "seedance-1.0-pro")
    assert (task.status, task.upstream_model, task.family) == ("queued", ark_id("seedance-1.0-pro"),
                                                               "seedance-1.0-pro")


def test_a_change_judged_on_an_upstream_replaced_meanwhile_is_refused_as_model_changed(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults judged fit for Seedance 1.5 pro are not written once the model calls Seedance 1.0 pro: the
    loser is told to send its change again, and then hears what the new upstream lacks."""
    real_write = catalog._write_changes

    def upstream_change_first(*args: Any) -> None:
        monkeypatch.setattr(catalog, "_write_changes", real_write)
        moved = api.request("PUT", "/api/admin/models/seedance-1.5-pro",
                            {"upstream_model": ark_id("seedance-1.0-pro")}, as_user=ADMIN)
        assert moved.status_code == 200, moved.body
        real_write(*args)

    monkeypatch.setattr(catalog, "_write_changes", upstream_change_first)
    audio = {"defaults": {"generate_audio": True}}
    lost = api.request("PUT", "/api/admin/models/seedance-1.5-pro", audio, as_user=ADMIN)
    assert lost.status_code == 409 and lost.data["error"]["code"] == "model_changed", lost.body
    assert lost.headers["Retry-After"]
    model = api.request("GET", "/api/admin/models/seedance-1.5-pro", as_user=ADMIN).data
    assert model["family"] == "seedance-1.0-pro" and "generate_audio" not in (model["defaults"] or {})
    again = api.request("PUT", "/api/admin/models/seedance-1.5-pro", audio, as_user=ADMIN)
    assert set(problems(again)) == {"defaults.generate_audio"}

@pytest.mark.parametrize(("change", "field"), [
    ({"upstream_model": ark_id("seedance-1.0-lite-t2v", "byteplus")}, "upstream_model"),
    ({"upstream_model": "ep-20260101000000-abcde", "family": "seedance-1.0-lite-t2v"}, "family"),
])
def test_an_upstream_its_provider_retired_is_refused_and_queued_tasks_stay(
        api: Api, monkeypatch: pytest.MonkeyPatch, change: dict, field: str) -> None:
    """Moving queued tasks to a model the provider switched off would fail every one of them at Ark."""
    at_byteplus(monkeypatch)
    queued = create(api, video("seedance-1.0-pro")).data["id"]
    refused = problems(api.request("PUT", "/api/admin/models/seedance-1.0-pro", {**change, "force": True},
                                   as_user=ADMIN))
    assert refused[field]["type"] == "upstream_retired"
    assert "seedance-1.0-pro-fast" in refused[field]["message"]
    assert TaskRecord.get(queued).upstream_model == ark_id("seedance-1.0-pro", "byteplus")
    created = api.request("POST", "/api/admin/models", {
        "model_id": "lite", "type": "video", "concurrency": 1, "daily_quota": 10, **change}, as_user=ADMIN)
    assert problems(created)[field]["type"] == "upstream_retired"
