"""A fresh stack gets the default models on AWS too, once per default model id: a later release's new default
reaches existing deployments, and a default an admin deleted stays deleted."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from chalice.test import Client

from chalicelib import catalog
from chalicelib.ark import capabilities
from chalicelib.resources import DEFAULT_MODELS
from chalicelib.store import first_run
from chalicelib.store.records import MarkerRecord, ModelRecord


def model_ids() -> list[str]:
    return sorted(model.model_id for model in ModelRecord.scan())


@pytest.fixture
def fresh_container(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog.ensure_default_models_once.cache_clear()


def test_the_scheduled_sweeper_seeds_a_fresh_stack(aws_resources, fresh_container, monkeypatch) -> None:
    from app import app

    monkeypatch.setenv("ARK_API_KEY", "unused-by-an-idle-sweep")
    assert model_ids() == []  # what `make deploy` leaves: tables, no models
    with Client(app) as client:
        event = client.events.generate_cw_event("Scheduled Event", "aws.events", {}, [])
        client.lambda_.invoke("sweeper", event)
    assert model_ids() == sorted(default.model_id for default in DEFAULT_MODELS)


def test_a_deployed_stage_enables_only_the_first_two_defaults_and_the_local_stack_all(aws_resources) -> None:
    assert {"seedream-4.5", "seedance-1.0-pro", "seedream-5.0-lite", "seedance-1.5-pro", "seedance-2.0"} <= {
        default.model_id for default in DEFAULT_MODELS}
    catalog.ensure_default_models()  # what the sweeper does on AWS
    enabled = {model.model_id: model.enabled for model in ModelRecord.scan()}
    assert [model_id for model_id, on in sorted(enabled.items()) if on] == ["seedance-1.0-pro", "seedream-4.5"]
    for model in ModelRecord.scan():
        entry = capabilities.find(model.upstream_model)
        assert entry is not None and entry.key == model.family  # an id of the table's, at the provider
        limit = entry.video.concurrency if entry.video else entry.image.images_per_minute  # type: ignore[union-attr]
        assert 1 <= model.concurrency < limit  # conservative: well within Ark's own limit


def test_the_local_stack_enables_every_default(aws_resources) -> None:
    from devstack.demo import create_demo_data

    create_demo_data(default_models=True)
    assert all(model.enabled for model in ModelRecord.scan())
    assert len(model_ids()) == len(DEFAULT_MODELS)


def test_a_byteplus_stage_seeds_byteplus_ids(aws_resources, monkeypatch) -> None:
    monkeypatch.setattr(catalog, "provider", lambda: "byteplus")
    catalog.ensure_default_models()
    assert ModelRecord.get("seedance-2.0").upstream_model == "dreamina-seedance-2-0-260128"


def test_a_deleted_default_stays_deleted_and_a_new_default_arrives(aws_resources, monkeypatch) -> None:
    assert sorted(catalog.ensure_default_models()) == sorted(default.model_id for default in DEFAULT_MODELS)
    catalog.delete_model("seedream-4.5")
    assert catalog.ensure_default_models() == []  # the next container's check
    assert "seedream-4.5" not in model_ids()
    newer = replace(DEFAULT_MODELS[0], model_id="seedream-5", display_name="Seedream 5")
    monkeypatch.setattr(catalog, "DEFAULT_MODELS", (*DEFAULT_MODELS, newer))  # a later release
    assert catalog.ensure_default_models() == ["seedream-5"]
    assert "seedream-4.5" not in model_ids() and "seedream-5" in model_ids()


def test_a_model_an_admin_made_under_a_default_id_is_kept_as_it_is(aws_resources) -> None:
    default = DEFAULT_MODELS[0]
    catalog.create_model(catalog.ModelCreate(model_id=default.model_id, type=default.type,
                                             upstream_model="ep-admins-own-endpoint", family=default.family,
                                             display_name="Ours",
                                             concurrency=1, daily_quota=5))
    assert default.model_id not in catalog.ensure_default_models()
    assert ModelRecord.get(default.model_id).upstream_model == "ep-admins-own-endpoint"
    assert first_run.marked([catalog.default_model_marker(default.model_id)])  # and never made later


def test_containers_starting_together_create_each_default_once(aws_resources) -> None:
    created: list[list[str]] = []
    threads = [threading.Thread(target=lambda: created.append(catalog.ensure_default_models())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = sorted(model_id for ids in created for model_id in ids)
    assert flat == sorted(default.model_id for default in DEFAULT_MODELS)
    assert len(list(MarkerRecord.scan())) == len(DEFAULT_MODELS)
