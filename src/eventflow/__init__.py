"""EventFlow: durable, exactly-once event ingestion on Redis Streams and PostgreSQL."""

__version__ = "0.1.0"
