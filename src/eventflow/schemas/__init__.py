"""Event types as data: versioned JSON Schemas stored in PostgreSQL.

``registry``: compiled, cached validators in every process (the one home of the
event rules). ``compat``: the backward-compatibility check between versions.
``store``: reading and registering versions.
"""
