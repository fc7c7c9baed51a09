"""The event store's Alembic migrations: `rollout events migrate` runs them (service.store.schema).

Revisions live in `versions/`, numbered; each is written out by hand (no autogenerate at run
time), so what a revision does never changes when the models in Python do.
"""
