"""Prometheus metrics on an injected registry. Units are part of every name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from eventflow.pipeline.streams import StreamState

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Label values that exist from the start (see ``Metrics.precreate``).
REJECTION_REASONS = ("invalid", "conflict", "overloaded", "unavailable", "too_large")
FAILURE_REASONS = (
    "InvalidEvent",
    "PoisonMessage",
    "UndecodableMessage",
    "DatabaseRejected",
)
RETRIED_OPERATIONS = ("commit", "ack", "ensure_group", "quarantine")

SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass
class Metrics:
    """All metrics of one process, registered on ``registry``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # Ingestion (API).
        self.events_received = Counter(
            "eventflow_events_received_total",
            "Events accepted by the API and stored in raw_events.",
            ["event_type"],
            registry=r,
        )
        self.events_rejected = Counter(
            "eventflow_events_rejected_total",
            "Events refused by the API: invalid, conflict, overloaded (429), "
            "unavailable (503), too_large (413).",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "eventflow_events_duplicates_total",
            "Events seen again: re-sent to the API or redelivered to a worker.",
            ["stage"],
            registry=r,
        )
        self.ingest_batch_size = Histogram(
            "eventflow_ingest_batch_size_events",
            "Events written per group commit in the API.",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.publish_failures = Counter(
            "eventflow_publish_failures_total",
            "Accepted events whose publish to Redis failed (the reconciler "
            "republishes them).",
            registry=r,
        )
        self.http_requests = Counter(
            "eventflow_http_requests_total",
            "HTTP requests by route and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "eventflow_http_request_duration_seconds",
            "HTTP request duration.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Processing (worker).
        self.events_processed = Counter(
            "eventflow_events_processed_total",
            "Events written to processed_events.",
            ["event_type"],
            registry=r,
        )
        self.events_failed = Counter(
            "eventflow_events_failed_total",
            "Events written to failed_events (dead letters).",
            ["event_type", "reason"],
            registry=r,
        )
        self.processing_duration = Histogram(
            "eventflow_processing_duration_seconds",
            "Time to validate, enrich and commit one worker batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "eventflow_end_to_end_latency_seconds",
            "Time from the API receiving an event to its processed row committing.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_batch_size = Histogram(
            "eventflow_worker_batch_size_events",
            "Stream entries handled per worker batch.",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "eventflow_retries_total",
            "Retries of operations that failed transiently.",
            ["operation"],
            registry=r,
        )
        self.quarantined = Counter(
            "eventflow_quarantined_entries_total",
            "Stream entries copied to the quarantine stream because not even "
            "their dead letter could be stored (`eventflow dlq quarantine`).",
            registry=r,
        )
        self.heartbeat = Gauge(
            "eventflow_worker_heartbeat_timestamp_seconds",
            "Last time the worker's consumer loop went round (Unix time); "
            "liveness probes compare it with now.",
            registry=r,
        )
        self.reclaimed = Counter(
            "eventflow_reclaimed_entries_total",
            "Stream entries reclaimed from dead or stalled consumers.",
            registry=r,
        )
        self.publish_backlog = Gauge(
            "eventflow_publish_backlog_events",
            "Accepted events this API holds, in order, until Redis takes them.",
            registry=r,
        )
        self.republished = Counter(
            "eventflow_republished_events_total",
            "Accepted events republished by the reconciler.",
            registry=r,
        )
        # State, read from Redis and PostgreSQL when scraped.
        self.stream_length = Gauge(
            "eventflow_stream_length_entries",
            "Entries in the Redis stream.",
            registry=r,
        )
        self.stream_lag = Gauge(
            "eventflow_stream_lag_entries",
            "Entries not yet delivered to the consumer group.",
            registry=r,
        )
        self.stream_pending = Gauge(
            "eventflow_stream_pending_entries",
            "Entries delivered but not yet acknowledged.",
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "eventflow_stream_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry.",
            registry=r,
        )
        self.consumers = Gauge(
            "eventflow_stream_consumers",
            "Consumers registered in the group.",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "eventflow_worker_partitions_owned",
            "Stream partitions this worker owns.",
            registry=r,
        )
        self.partition_length = Gauge(
            "eventflow_partition_length_entries",
            "Entries in a partition's stream.",
            ["partition"],
            registry=r,
        )
        self.partition_lag = Gauge(
            "eventflow_partition_lag_entries",
            "Entries of a partition not yet delivered.",
            ["partition"],
            registry=r,
        )
        self.partition_pending = Gauge(
            "eventflow_partition_pending_entries",
            "Entries of a partition delivered but not yet acknowledged.",
            ["partition"],
            registry=r,
        )
        self.partition_owned = Gauge(
            "eventflow_partition_owned",
            "1 when a live worker holds the partition's lease, else 0.",
            ["partition"],
            registry=r,
        )
        self.partition_owner = Gauge(
            "eventflow_partition_owner_info",
            "The worker that owns a partition (value 1).",
            ["partition", "owner"],
            registry=r,
        )
        self.table_bytes = Gauge(
            "eventflow_table_bytes",
            "Size of an event table, all its partitions and indexes.",
            ["table"],
            registry=r,
        )
        self.oldest_partition = Gauge(
            "eventflow_oldest_partition_timestamp_seconds",
            "Start of an event table's oldest partition (Unix time).",
            ["table"],
            registry=r,
        )
        self.partitions_dropped = Counter(
            "eventflow_partitions_dropped_total",
            "Time partitions dropped past retention.",
            ["table"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "eventflow_dead_letters",
            "Rows in failed_events awaiting replay.",
            registry=r,
        )
        self.dependency_up = Gauge(
            "eventflow_dependency_up",
            "1 when the dependency answers, 0 when it does not.",
            ["dependency"],
            registry=r,
        )

    def precreate(self, event_types: Iterable[str]) -> None:
        """Create every known label set at zero, so that ``rate()`` and
        ``increase()`` see the first increment instead of a series appearing."""
        for event_type in (*event_types, "unknown"):
            self.events_received.labels(event_type)
            self.events_processed.labels(event_type)
            for reason in FAILURE_REASONS:
                self.events_failed.labels(event_type, reason)
        for reason in REJECTION_REASONS:
            self.events_rejected.labels(reason)
        for stage in ("api", "worker"):
            self.duplicates.labels(stage)
        for operation in RETRIED_OPERATIONS:
            self.retries.labels(operation)
        for dependency in ("postgres", "redis"):
            self.dependency_up.labels(dependency)

    def set_stream_state(self, state: StreamState) -> None:
        """Copy the stream's state (read from Redis) into the gauges."""
        self.stream_length.set(state.length)
        self.stream_lag.set(state.lag)
        self.stream_pending.set(state.pending)
        self.oldest_pending_age.set(state.oldest_pending_age_s)
        self.consumers.set(state.consumers)

    def set_partitions(
        self, states: Sequence[StreamState], owners: Sequence[str | None]
    ) -> None:
        """Per-partition gauges (read from Redis when scraped)."""
        self.partition_owner.clear()
        for p, (state, owner) in enumerate(zip(states, owners, strict=True)):
            label = str(p)
            self.partition_length.labels(label).set(state.length)
            self.partition_lag.labels(label).set(state.lag)
            self.partition_pending.labels(label).set(state.pending)
            self.partition_owned.labels(label).set(owner is not None)
            if owner is not None:
                self.partition_owner.labels(label, owner).set(1)
