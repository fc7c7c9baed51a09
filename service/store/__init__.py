"""The event store: every routing decision (exposure) and every outcome, in SQL.

Owns the schema (`exposures`, `outcomes`), the non-blocking batched writer used by the selector
and the readers' table handles, the schema's Alembic migrations (`schema`, `migrations/`) and
retention (`retention`: monthly partitions on PostgreSQL, pruning). Embedded mode writes SQLite
under the data folder; server mode any SQLAlchemy URL (PostgreSQL). May import only `config` and
`errors`; every other package may import it.
"""

# The outcome the churn family's users report (1 = the user stayed); the reports' default
# primary metric, the guard's and the simulator's.
PRIMARY_METRIC = "retained"
