"""Ark-style status callbacks (docs/ark.md, "Videos"): the GET body is POSTed to `callback_url` on each status change.

Deliveries for one task go out in order; `succeeded`/`failed` are retried (`callback_retries` more times) when
the receiver does not answer 2xx within `callback_timeout_s`; other statuses get one attempt.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

from arksim.video import CALLBACK_STATUSES, StatusChange

if TYPE_CHECKING:
    from arksim.simulator import Simulator

RETRIED_STATUSES = ("succeeded", "failed")


class CallbackSender:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._http = httpx.AsyncClient()
        self._last_delivery: dict[str, asyncio.Task[None]] = {}

    def dispatch(self, changes: list[StatusChange]) -> None:
        for change in changes:
            url = change.task.callback_url
            if not url or change.status not in CALLBACK_STATUSES:
                continue
            previous = self._last_delivery.get(change.task.id)
            self._last_delivery[change.task.id] = asyncio.create_task(
                self._deliver_after(previous, url, change.payload)
            )

    async def _deliver_after(self, previous: asyncio.Task[None] | None, url: str,
                             payload: dict[str, Any]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        await self._deliver(url, payload)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        config = self._sim.config
        counters = self._sim.stats.callbacks
        attempts = 1 + (config.callback_retries if payload["status"] in RETRIED_STATUSES else 0)
        for attempt in range(attempts):
            counters["attempts"] += 1
            try:
                response = await self._http.post(url, json=payload, timeout=config.callback_timeout_s)
                if response.is_success:
                    counters["delivered"] += 1
                    return
            except httpx.HTTPError:
                pass
            counters["failed_attempts"] += 1
            if attempt + 1 < attempts:
                await asyncio.sleep(config.callback_retry_delay_s)
        counters["given_up"] += 1

    async def aclose(self) -> None:
        pending = [task for task in self._last_delivery.values() if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._http.aclose()
