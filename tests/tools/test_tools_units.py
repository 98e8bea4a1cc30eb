"""The tools' pure parts: generated events are valid, answers are classified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from eventflow.models import parse_event, validate_event
from eventflow.tools.events import KINDS, EventGenerator
from eventflow.tools.report import latency_stats
from eventflow.tools.sending import Outcome, read_answer
from tests.schemas_fixture import offline_registry

REGISTRY = offline_registry()


def test_generated_events_pass_the_api_validation() -> None:
    generator = EventGenerator(seed=7)
    seen = set()
    for _ in range(400):
        event = generator.event()
        seen.add(event["event_type"])
        validate_event(
            parse_event(event),
            registry=REGISTRY,
            received_at=datetime.now(UTC),
            correlation_id="test",
            max_future_skew=timedelta(seconds=300),
        )
    assert seen == set(KINDS)


def test_bodies_are_single_events_or_batches_with_their_ids() -> None:
    single = EventGenerator(kind="custom").bodies(3, 1)
    assert len(single) == 3
    ids, body = single[0]
    assert orjson.loads(body)["event_id"] == ids[0]
    batches = EventGenerator().bodies(25, 10)
    assert [len(ids) for ids, _ in batches] == [10, 10, 5]
    events = orjson.loads(batches[2][1])["events"]
    assert [e["event_id"] for e in events] == batches[2][0]


def test_answers_are_classified_per_event() -> None:
    assert read_answer(202, b"{}", None, 1, False).outcomes == [Outcome.accepted]
    assert read_answer(200, b"{}", None, 1, False).outcomes == [Outcome.duplicate]
    invalid = read_answer(
        422,
        orjson.dumps({"detail": [{"loc": ["body", "properties", "page"], "msg": "x"}]}),
        None,
        1,
        False,
    )
    assert invalid.outcomes == [Outcome.refused] and not invalid.retryable
    assert invalid.errors == ["HTTP 422: properties.page: x"]
    busy = read_answer(429, b'{"detail": "behind"}', "5", 2, False)
    assert busy.outcomes == [Outcome.failed] * 2
    assert busy.retryable and busy.retry_after == 5.0
    batch = read_answer(
        200,
        orjson.dumps(
            {
                "results": [
                    {"index": 0, "status": "accepted", "event_id": "a"},
                    {"index": 1, "status": "invalid", "errors": [{"loc": ["x"]}]},
                    {"index": 2, "status": "duplicate", "event_id": "c"},
                ]
            }
        ),
        None,
        3,
        True,
    )
    assert batch.ok
    assert batch.outcomes == [Outcome.accepted, Outcome.refused, Outcome.duplicate]
    assert len(batch.errors) == 1 and batch.errors[0].startswith("invalid")


def test_latency_percentiles_by_nearest_rank() -> None:
    assert latency_stats([]) is None
    stats = latency_stats([i / 1000 for i in range(1, 101)])
    assert stats is not None
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms, stats.max_ms) == (
        50.0,
        95.0,
        99.0,
        100.0,
    )
    assert stats.count == 100 and stats.mean_ms == 50.5
