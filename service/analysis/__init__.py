"""Turning the event store into decisions: statistics, the A/B and validation reports.

Owns the statistics and drift as pure functions (`stats`, `drift`, `model_quality`), event-store
queries (`queries`, `validation_queries`), the decision document both reports end in
(`decision`), the A/B evidence, rules and checks (`ab_evidence`, `ab_rules`, `ab_checks`,
`ab_test`), post-rollout validation (`validation_evidence`, `validation`), live guardrails
(`guardrails`), the reports' parameters declared once (`parameters`) and the papermill runner
(`reports`). May import `registry`, `flags`, `store` and the base modules; `rollout`,
`harness` and `cli` may import it. Never `serving`: analysis reads what serving logged.
"""
