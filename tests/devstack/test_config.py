"""Where `make run` listens and what it tells the app, by default and when overridden by environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.settings import DEFAULT_ARK_BASE_URL
from devstack.config import StackConfig


def test_defaults_match_the_documented_ports_and_demo_accounts() -> None:
    config = StackConfig.from_environ({})

    assert (config.api_url, config.ws_url, config.web_url) == (
        "http://127.0.0.1:8000",
        "ws://127.0.0.1:8001",
        "http://127.0.0.1:8080",
    )
    assert config.ark_base_url == "http://127.0.0.1:9000/api/v3"
    assert (config.moto_port, config.prefix) == (8005, "arkflow-local")
    assert (config.admin.username, config.admin.password) == ("admin", "admin-pass")
    assert (config.demo.username, config.demo.password) == ("demo", "demo-pass")


def test_every_setting_is_overridable_by_environment() -> None:
    config = StackConfig.from_environ(
        {
            "ARKFLOW_HOST": "127.0.0.2",
            "ARKFLOW_API_PORT": "18000",
            "ARKFLOW_WS_PORT": "18001",
            "ARKFLOW_WEB_PORT": "18080",
            "ARKSIM_PORT": "19000",
            "MOTO_PORT": "18005",
            "ARKFLOW_PREFIX": "mine",
            "ADMIN_USERNAME": "root",
            "ADMIN_PASSWORD": "root-pass",
            "DEMO_USERNAME": "guest",
            "DEMO_PASSWORD": "guest-pass",
        }
    )

    assert config.web_client_config() == {"apiBaseUrl": "http://127.0.0.2:18000", "wsUrl": "ws://127.0.0.2:18001"}
    assert config.web_url == "http://127.0.0.2:18080"
    assert config.ark_base_url == "http://127.0.0.2:19000/api/v3"
    assert (config.moto_port, config.prefix) == (18005, "mine")
    assert tuple(config.admin) == ("root", "root-pass", "admin")
    assert tuple(config.demo) == ("guest", "guest-pass", "user")


def test_the_app_is_pointed_at_moto_the_simulator_and_the_web_origin() -> None:
    environment = StackConfig.from_environ({"ARKFLOW_PREFIX": "mine"}).app_environment("http://127.0.0.1:18005")

    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:18005"
    assert environment["ARKFLOW_PREFIX"] == "mine"
    assert environment["RESULTS_BUCKET"] == "mine-media"
    assert environment["CORS_ORIGINS"] == "http://127.0.0.1:8080"
    assert environment["ARK_BASE_URL"] == "http://127.0.0.1:9000/api/v3"
    assert environment["ARK_API_KEY"]
    assert environment["PUBLIC_API_URL"] == "http://127.0.0.1:8000"
    assert environment["WEBSOCKET_PUBLIC_URL"] == "ws://127.0.0.1:8001"


def test_an_ark_api_key_switches_to_the_real_ark() -> None:
    default_region = StackConfig.from_environ({"ARK_API_KEY": "real-key"})
    chosen = StackConfig.from_environ({"ARK_API_KEY": "real-key", "ARK_BASE_URL": "https://ark.example/api/v3"})

    assert not default_region.uses_simulator
    assert default_region.app_environment("http://moto")["ARK_BASE_URL"] == DEFAULT_ARK_BASE_URL
    assert chosen.app_environment("http://moto")["ARK_API_KEY"] == "real-key"
    assert chosen.ark_base_url == "https://ark.example/api/v3"


class _FakeProcess:
    returncode = 1

    def poll(self) -> int:
        return 1


def test_a_stack_whose_free_port_was_taken_starts_again_on_fresh_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from devstack import testing

    started: list[StackConfig] = []

    def start(config: StackConfig, output_path: Path, extra_env: object) -> testing.LocalStack:
        started.append(config)
        refused = "OSError: [Errno 98] Address already in use"
        output_path.write_text(refused if len(started) == 1 else testing.BANNER_END)
        return testing.LocalStack(config, _FakeProcess(), output_path)  # type: ignore[arg-type]

    def wait_until_ready(stack: testing.LocalStack, timeout_s: float) -> None:
        if testing.BANNER_END not in stack.output():
            raise AssertionError("local stack did not start")

    monkeypatch.setattr(testing, "_start", start)
    monkeypatch.setattr(testing, "_wait_until_ready", wait_until_ready)
    with testing.launch_local_stack(tmp_path / "stack.log") as stack:
        assert stack.config is started[1]
    assert len(started) == 2 and started[0].prefix != started[1].prefix

    # The caller's own ports are kept: a restart over them must not move to others.
    started.clear()
    given = testing.free_stack_config()
    with pytest.raises(AssertionError, match="did not start"), testing.launch_local_stack(tmp_path / "stack.log",
                                                                                       config=given):
        pass
    assert started == [given]
