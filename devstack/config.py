"""Where each piece of the local stack listens and who may sign in: defaults, each overridable by environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from chalicelib.resources import MEDIA_BUCKET
from chalicelib.settings import DEFAULT_ARK_BASE_URL

# Any non-empty key satisfies the simulator's `Authorization: Bearer` check.
SIMULATOR_API_KEY = "arksim-local-key"
FAKE_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
AWS_REGION = "us-east-1"


class Credentials(NamedTuple):
    """Also unpacks as `(username, password, role)`."""

    username: str
    password: str
    role: str


DEFAULT_ADMIN = Credentials("admin", "admin-pass", "admin")
DEFAULT_DEMO_USER = Credentials("demo", "demo-pass", "user")


@dataclass(frozen=True)
class StackConfig:
    host: str = "127.0.0.1"
    api_port: int = 8000
    ws_port: int = 8001
    web_port: int = 8080
    sim_host: str = "127.0.0.1"
    sim_port: int = 9000
    moto_port: int = 8005
    prefix: str = "arkflow-local"
    admin: Credentials = DEFAULT_ADMIN
    demo: Credentials = DEFAULT_DEMO_USER
    # Set: the real Ark at `real_ark_base_url` is used and no simulator is started.
    real_ark_api_key: str = ""
    real_ark_base_url: str = DEFAULT_ARK_BASE_URL
    startup_timeout_s: float = 90.0
    # Set: the stack uses this moto server, which outlives it, instead of starting its own (restart tests).
    moto_url: str = ""
    # Every `@app.schedule` handler runs this often locally, whatever its rate on AWS.
    schedule_interval_s: float = 5.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        host = env.get("ARKFLOW_HOST") or defaults.host

        def port(name: str, default: int) -> int:
            return int(env.get(name) or default)

        return cls(
            host=host,
            api_port=port("ARKFLOW_API_PORT", defaults.api_port),
            ws_port=port("ARKFLOW_WS_PORT", defaults.ws_port),
            web_port=port("ARKFLOW_WEB_PORT", defaults.web_port),
            sim_host=env.get("ARKSIM_HOST") or host,
            sim_port=port("ARKSIM_PORT", defaults.sim_port),
            moto_port=port("MOTO_PORT", defaults.moto_port),
            prefix=env.get("ARKFLOW_PREFIX") or defaults.prefix,
            admin=Credentials(
                env.get("ADMIN_USERNAME") or defaults.admin.username,
                env.get("ADMIN_PASSWORD") or defaults.admin.password,
                "admin",
            ),
            demo=Credentials(
                env.get("DEMO_USERNAME") or defaults.demo.username,
                env.get("DEMO_PASSWORD") or defaults.demo.password,
                "user",
            ),
            real_ark_api_key=env.get("ARK_API_KEY", ""),
            real_ark_base_url=env.get("ARK_BASE_URL") or defaults.real_ark_base_url,
            startup_timeout_s=float(env.get("ARKFLOW_STARTUP_TIMEOUT_S") or defaults.startup_timeout_s),
            moto_url=env.get("ARKFLOW_MOTO_URL", ""),
            schedule_interval_s=float(env.get("ARKFLOW_SCHEDULE_INTERVAL_S") or defaults.schedule_interval_s),
        )

    @property
    def uses_simulator(self) -> bool:
        return not self.real_ark_api_key

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def sim_url(self) -> str:
        """The simulator's root; its admin API (`/_sim/...`) lives here."""
        return f"http://{self.sim_host}:{self.sim_port}"

    @property
    def ark_base_url(self) -> str:
        return f"{self.sim_url}/api/v3" if self.uses_simulator else self.real_ark_base_url

    @property
    def ark_api_key(self) -> str:
        return SIMULATOR_API_KEY if self.uses_simulator else self.real_ark_api_key

    def web_client_config(self) -> dict[str, str]:
        """The web app's `/config.json`: the same static files run anywhere with their own copy."""
        return {"apiBaseUrl": self.api_url, "wsUrl": self.ws_url}

    def app_environment(self, moto_url: str) -> dict[str, str]:
        """What `chalicelib.settings` and boto3/pynamodb read, pointing the app at this stack."""
        return {
            "AWS_ENDPOINT_URL": moto_url,
            **FAKE_AWS_CREDENTIALS,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "ARKFLOW_PREFIX": self.prefix,
            "RESULTS_BUCKET": MEDIA_BUCKET.physical_name(self.prefix),
            "CORS_ORIGINS": self.web_url,
            "WS_ALLOWED_ORIGINS": self.web_url,
            "ARK_BASE_URL": self.ark_base_url,
            "ARK_API_KEY": self.ark_api_key,
            # Results are copied from Ark's hosts only; locally the simulator serves them.
            **({"ARK_RESULT_HOSTS": self.sim_url} if self.uses_simulator else {}),
            "PUBLIC_API_URL": self.api_url,
            "WEBSOCKET_PUBLIC_URL": self.ws_url,
            # Webhook receivers on this machine (a script, a test's server) are reachable here only.
            "WEBHOOK_ALLOW_LOOPBACK": "1",
        }
