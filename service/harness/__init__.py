"""Dev-only harnesses: the demo, the traffic simulator and a real Unleash server for tests.

Nothing in the product imports this package; only the `rollout` CLI (for `rollout demo`,
`rollout simulate`) and the tests do. It may import every layer below the CLI.
"""
