"""The request path: from an HTTP request to the bento that serves it, and the exposure it logs.

Owns the Flask application factory and its thin blueprints (`api/`), the servers running it
(`server`: granian or gunicorn workers), the selector (`selector`: resolve, forward, fall back,
log), the routing decision (`routing`), the Unleash client in embedded or server mode
(`flag_client`), the Unleash context built from a request (`context`), the bento catalog and
forwarding (`catalog`, `forwarding`), circuit breakers, shadow traffic, input contracts,
Prometheus metrics and the OpenAPI document.
May import `registry` (read side only), `flags`, `store`, and `config`/`errors`/`processes`/`files`;
nothing above it (analysis, rollout, harness, cli) may be imported here.
"""
