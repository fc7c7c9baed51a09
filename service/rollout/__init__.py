"""Acting on decisions: the changes to flags that reports and people ask for, audited.

Owns `decide apply/approve` (`decisions`), the guard that watches live guardrails and promotes
step by step (`guard`) with its own Unleash identity (`identity`), rollback to the last good
version (`rollback`) and notifications (`notify`). May import `analysis`, `registry`, `flags`,
`store` and the base modules; only `console`, `harness` and
`cli` import it.
"""
