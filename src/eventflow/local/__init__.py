"""Local PostgreSQL and Redis-compatible servers for ``eventflow dev``, the tests
and the benchmark; a production deployment uses its own servers."""
