"""PostgreSQL: the tables (``tables``), batched idempotent writes (``events``),
dead-letter operations (``deadletters``) and the migrations that own the schema
(``migrate``, ``migrations/``)."""
