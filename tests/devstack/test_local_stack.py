"""`make run` (`python -m devstack`): comes up without a terminal, says where everything is, stops cleanly."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from devstack.testing import launch_local_stack

pytestmark = pytest.mark.stack
# Generous: other test processes share the CPU, and password hashing on login is deliberately slow.
HTTP_TIMEOUT_S = 30


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc."""
    table = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may contain spaces and parentheses: split after its closing one.
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(stat_path.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants_of(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time (so a recycled pid is not mistaken for it)."""
    table = process_table()
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = {child for child, (parent, _) in table.items() if parent in parents and child not in found}
        found.update({child: table[child][1] for child in children})
        parents = children
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    table = process_table()
    return [pid for pid, started in processes.items() if pid in table and table[pid][1] == started]


def port_is_free(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def serves_requests_in_parallel(api_url: str) -> bool:
    """A request left half-sent occupies one handler; a threaded server still answers the next one."""
    host, port = api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stalled:
        stalled.sendall(b"GET /api/health HTTP/1.1\r\nHost: stalled\r\n")
        try:
            return httpx.get(api_url + "/api/health", timeout=HTTP_TIMEOUT_S).status_code == 200
        except httpx.TimeoutException:
            return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_stack_serves_everything_and_stops_without_leftovers(tmp_path: Path, stop_signal: int) -> None:
    with launch_local_stack(tmp_path / "stack.log") as stack:
        config = stack.config
        banner = stack.output()
        for url in (stack.api_url, stack.web_url, stack.ws_url, stack.ark_base_url, stack.moto_url):
            assert url in banner
        for credentials in (stack.admin, stack.demo):
            assert f"{credentials.username} / {credentials.password}" in banner

        login = httpx.post(
            stack.api_url + "/api/users/login",
            json={"username": stack.demo.username, "password": stack.demo.password},
            timeout=HTTP_TIMEOUT_S,
        )
        assert login.status_code == 200
        assert login.json()["role"] == "user"

        web_config = httpx.get(stack.web_url + "/config.json", timeout=HTTP_TIMEOUT_S)
        assert web_config.json() == {"apiBaseUrl": stack.api_url, "wsUrl": stack.ws_url, "uploadUrl": stack.moto_url}
        assert f"connect-src 'self' {stack.api_url} {stack.ws_url} {stack.moto_url};" in \
            web_config.headers["content-security-policy"]
        assert web_config.headers["cache-control"] == "no-store"
        assert httpx.get(stack.sim_url + "/_sim/config", timeout=HTTP_TIMEOUT_S).status_code == 200
        assert serves_requests_in_parallel(stack.api_url)

        children = descendants_of(stack.process.pid)
        assert len(children) >= 2  # moto and the simulator, each in a process of its own

        assert stack.stop(stop_signal) == 0

    assert still_running(children) == []
    for port in (config.api_port, config.web_port, config.sim_port, config.moto_port):
        assert port_is_free(port)


def test_a_port_in_use_is_named_with_the_setting_that_moves_it(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        taken_port = taken.getsockname()[1]
        launching = launch_local_stack(tmp_path / "stack.log", {"ARKFLOW_WEB_PORT": str(taken_port)})
        with pytest.raises(AssertionError, match=f"127.0.0.1:{taken_port} is in use.*ARKFLOW_WEB_PORT"), launching:
            pass
