"""Bulk dead-letter actions run in the background, in chunks, with their
progress in Redis (any API process can show it) and one audit entry at the end.

Each chunk is the store's own replay or purge of a few hundred ids, so a large
action never holds one long transaction, and what was done before a crash stays
done (and is in the audit entry of the part that finished)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow.pipeline.streams import Streams
from eventflow.security import audit
from eventflow.security.auth import Principal
from eventflow.store import deadletters as dl

log = logging.getLogger(__name__)

CHUNK = 500
KEEP_S = 86_400
# Event ids are listed in the audit entry up to this many (the event page's
# timeline finds its replays by them).
AUDIT_EVENT_IDS = 1000


class BulkAction(BaseModel):
    """What an operator confirmed: an action on the selected dead letters
    (``ids``) or on every one matching ``filter``."""

    action: Literal["replay", "purge"]
    ids: list[dl.DeadLetterId] | None = None
    filter: dl.DeadLetterFilter = Field(default_factory=dl.DeadLetterFilter)
    corrections: dict[int, dict[str, Any]] = Field(
        default_factory=dict, description="Corrected properties by dead-letter id"
    )
    expected: int = Field(ge=0, description="The count the operator confirmed")


class JobState(BaseModel):
    id: str
    action: str
    total: int
    done: int = 0
    skipped: int = 0
    state: Literal["running", "finished", "failed"] = "running"
    error: str | None = None

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.done * 100 // self.total)


class Jobs:
    """Starts bulk actions and reports their progress."""

    def __init__(
        self, engine: AsyncEngine, redis: Redis, streams: Streams, prefix: str
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.streams = streams
        self.prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:console:job:{job_id}"

    async def _save(self, job: JobState) -> None:
        await self.redis.set(self._key(job.id), job.model_dump_json(), ex=KEEP_S)

    async def get(self, job_id: str) -> JobState | None:
        raw = await self.redis.get(self._key(job_id))
        return None if raw is None else JobState.model_validate_json(raw)

    async def start(self, bulk: BulkAction, who: Principal) -> JobState:
        job = JobState(id=secrets.token_hex(8), action=bulk.action, total=bulk.expected)
        await self._save(job)
        task = asyncio.create_task(self._run(job, bulk, who), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: JobState, bulk: BulkAction, who: Principal) -> None:
        event_ids: list[UUID] = []
        started = datetime.now(UTC)
        try:
            for dead_letter_id, properties in bulk.corrections.items():
                found = await dl.matching(self.engine, ids=[dead_letter_id])
                event_ids.extend(e for _, e in found)
                result = await dl.replay(
                    self.engine,
                    self.streams,
                    ids=[dead_letter_id],
                    properties=properties,
                )
                job.done += result.replayed
                job.skipped += len(result.skipped)
            after: int | None = None
            while True:
                chunk = await dl.matching(
                    self.engine,
                    bulk.filter if bulk.ids is None else None,
                    ids=bulk.ids,
                    after_id=after,
                    limit=CHUNK,
                )
                if not chunk:
                    break
                after = chunk[-1][0]
                ids = [i for i, _ in chunk if i not in bulk.corrections]
                event_ids.extend(e for i, e in chunk if i not in bulk.corrections)
                if bulk.action == "replay":
                    result = await dl.replay(self.engine, self.streams, ids=ids)
                    job.done += result.replayed
                    job.skipped += len(result.skipped)
                else:
                    job.done += await dl.purge(self.engine, ids=ids)
                job.total = max(job.total, job.done + job.skipped)
                await self._save(job)
            job.state = "finished"
        except Exception as exc:
            log.exception("console bulk action failed", extra={"job": job.id})
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
        finally:
            await self._save(job)
            await audit.record_by(
                self.engine,
                who,
                f"dead_letter.{bulk.action}_many",
                target=(
                    f"{len(bulk.ids)} selected dead letters"
                    if bulk.ids is not None
                    else "dead letters matching a filter"
                ),
                rows=job.done,
                details={
                    "via": "console",
                    "job": job.id,
                    "started_at": started.isoformat(),
                    "state": job.state,
                    "confirmed": bulk.expected,
                    "skipped": job.skipped,
                    "corrected": sorted(bulk.corrections),
                    **(
                        {
                            "filter": bulk.filter.model_dump(
                                mode="json", exclude_none=True
                            )
                        }
                        if bulk.ids is None
                        else {"ids": bulk.ids}
                    ),
                    "event_ids": [str(e) for e in event_ids[:AUDIT_EVENT_IDS]],
                },
            )
