"""nginx (Debian's package) as the load balancer in front of several `rollout serve` replicas.

For the multi-replica test and for trying the setup by hand; in a cluster the ingress controller
plays this part with the same settings. What matters, and why:

- `proxy_next_upstream error timeout http_502 http_503 non_idempotent`: a request that finds a
  dead or draining replica is sent to the next one, predictions (POST) included: routing is a
  pure function of the flag and the user, so a retried predict returns the same bento. The
  caller's X-Request-ID travels with the retry, so a duplicate exposure is recognisable.
- request buffering (nginx's default): a slow client never holds a gunicorn thread;
- `X-Upstream` on every answer: which replica(s) it went through, for the test to count.
- keep-alive connections to the replicas, like a real ingress.

Runs on loopback only, in the foreground, with every file it writes under `workdir`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from service.errors import ConfigError
from service.processes import ManagedProcess, free_port

NGINX = "/usr/sbin/nginx"


def nginx_executable() -> str:
    """The nginx binary; ConfigError with the install command when there is none."""
    found = shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)
    if not found:
        raise ConfigError("nginx is not installed: run scripts/install-nginx (Debian nginx-light)")
    return found


def nginx_config(upstreams: list[str], port: int, workdir: Path) -> str:
    """The whole nginx.conf: one upstream group of `host:port` replicas behind 127.0.0.1:port."""
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would hand its workers to `nobody`, who cannot enter a private workdir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    upstream selectors {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        location / {{
            proxy_pass http://selectors;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class NginxBalancer(ManagedProcess):
    """nginx in the foreground (`daemon off`), ready when /readyz answers through it."""

    def __init__(self, upstreams: list[str], workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(upstreams, self.port, workdir), encoding="utf-8")
        command = [nginx_executable(), "-p", str(workdir), "-c", str(config), "-g", "daemon off;"]
        url = f"http://127.0.0.1:{self.port}"
        super().__init__("nginx", command, f"{url}/readyz", workdir / "nginx.log")
        self.url = url
