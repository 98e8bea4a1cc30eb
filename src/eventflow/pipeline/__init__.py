"""The event pipeline: group commit (``ingest``), the stream (``streams``), the
worker's consumer loop (``worker``) and its pure step (``processing``), the
reconciler, and the retry policy."""
