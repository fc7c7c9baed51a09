"""The console: one web page per question an operator asks about a rollout.

Owns the console's Flask app (`rollout console`): the Rollouts, Timeline, Models and Live pages,
rendered on the server from the same modules the CLI uses, and the few operator actions
(approve a pending promotion, resume a paused guard, roll back), each behind an operator key,
a confirmation and a CSRF token, and audited with the operator's name. It sits below the CLI and
above the domain: it may import rollout, analysis, registry, flags and store, never serving (it
reads the selector over HTTP, as any monitor would).
"""
