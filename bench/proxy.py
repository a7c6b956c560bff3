"""What the forward-auth decision adds to an API call through nginx, on loopback (issue 20).

The same calls, driven by wrk (else bench/pyload.py) for ``--seconds`` each after a warm-up:

- ``upstream``: straight to the API (an nginx server block answering 200 itself, so the API
  costs next to nothing and the differences are the proxy's and the decision's);
- ``nginx``: through nginx, no decision (a plain proxy_pass, for nginx's own share);
- ``nginx_decision``: through the shipped platform/proxies/nginx.conf, only its placeholders
  filled in: auth_request to the platform (gunicorn, 2 sync workers), a route hit, a repeated
  Bearer token, the identity headers copied to the API;
- ``platform_public``: the platform's own open endpoint straight to gunicorn, for what the
  platform serves at all on this machine at this moment.

It prints requests per second and p50/p99 of each, and the latency the decision adds. The
platform runs in the embedded mode (``--mode redis`` for PostgreSQL and Redis); the tenant is
the DEFAULT_TENANT, so wrk's Host (127.0.0.1) reaches it.

    .venv/bin/python -m bench.proxy [--seconds 10] [--mode embedded|redis]
"""

import argparse
import json
import secrets
import shutil
import urllib.request
from pathlib import Path

from bench.load import Load, drive
from bench.stack import ROOT, Platform, Stack, free_port, import_tenants, start_platform, start_web

SLUG = "proxied"
AUDIENCE = "https://api.proxied.test"
ROUTE = "/orders/{id}"
TARGET = "/orders/42"
PUBLIC = ("/api/public", "")  # the platform's own open endpoint, straight to gunicorn
NGINX_MAIN = """
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    server {{  # the API: answers at once
        listen 127.0.0.1:{api};
        location / {{ default_type application/json; return 200 '{{"ok": true}}'; }}
    }}
    server {{  # nginx without the decision
        listen 127.0.0.1:{plain};
        location / {{ proxy_pass http://127.0.0.1:{api}; }}
    }}
    include {home}/site.conf;  # the shipped server block
}}
"""


def start_nginx(stack: Stack, web_url: str, secret: str) -> dict[str, str]:
    """nginx with the shipped server block and the two comparison servers; their base URLs."""
    home = stack.workdir / "nginx"
    home.mkdir()
    ports = {"upstream": free_port(), "nginx": free_port(), "nginx_decision": free_port()}
    site = (ROOT / "platform" / "proxies" / "nginx.conf").read_text()
    values = {
        "PROXY_LISTEN": f"127.0.0.1:{ports['nginx_decision']}",
        "AUTHZ_PLATFORM": web_url.removeprefix("http://"),
        "API_UPSTREAM": f"127.0.0.1:{ports['upstream']}",
        "AUTHZ_PROXY_SECRET": secret,
    }
    for name, value in values.items():
        site = site.replace("${" + name + "}", value)
    (home / "site.conf").write_text(site)
    main = NGINX_MAIN.format(home=home, api=ports["upstream"], plain=ports["nginx"])
    (home / "nginx.conf").write_text(main)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx, "-p", str(home), "-c", str(home / "nginx.conf"), "-g", "daemon off;"]
    process = stack.spawn("nginx", argv, {})
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for url in urls.values():
        stack.wait_http("nginx", process, url + "/")
    return urls


def mint_token(plat: Platform) -> str:
    """A token for the tenant's route, from the development issuer over HTTP."""
    body = json.dumps({"audience": AUDIENCE, "sub": "bench@clients", "scope": "read:orders"})
    request = urllib.request.Request(  # noqa: S310 - the loopback issuer we started
        f"{plat.issuer_url}/{SLUG}/oauth/token",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())["access_token"]


def check_allowed(url: str, token: str) -> None:
    """The call through nginx is allowed and reaches the API, else the run means nothing."""
    request = urllib.request.Request(url + TARGET, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 200 or b'"ok"' not in response.read():
            raise SystemExit(f"{url}{TARGET} was not allowed through to the API")


def measure(urls: dict[str, str], token: str, seconds: int, workdir: Path) -> dict[str, Load]:
    """Each scenario after a 2 s warm-up; what the timed run measured."""
    results = {}
    for name, url in urls.items():
        lines = [PUBLIC] if name == "platform_public" else [(TARGET, f"Bearer {token}")]
        drive(url, lines, 200, 2, workdir)
        results[name] = drive(url, lines, 200, seconds, workdir)
        if results[name].errors:
            raise SystemExit(f"{name}: {results[name].errors} errors: {results[name]}")
    return results


def report(results: dict[str, Load]) -> None:
    """The table and the added latency."""
    print(f"{'scenario':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, load in results.items():
        print(f"{name:<16} {load.rps:>8.0f} {load.p50_ms:>8.2f} {load.p99_ms:>8.2f}")
    straight, proxied, decided = (results[n] for n in ("upstream", "nginx", "nginx_decision"))
    for label, base in (
        ("nginx + decision over straight to the API", straight),
        ("the decision alone, over nginx without it", proxied),
    ):
        p50, p99 = decided.p50_ms - base.p50_ms, decided.p99_ms - base.p99_ms
        print(f"added by {label}: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms")


def main() -> None:
    """Start everything, check the path, measure, report, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--mode", choices=("embedded", "redis"), default="embedded")
    args = parser.parse_args()
    secret = secrets.token_urlsafe(32)
    with Stack() as stack:
        plat = start_platform(stack, args.mode)
        plat.env.update(AUTHZ_PROXY_SECRET=secret, DEFAULT_TENANT=SLUG)
        tenant = {
            "slug": SLUG,
            "name": "Proxied",
            "issuer": f"{plat.issuer_url}/{SLUG}/",
            "audiences": [AUDIENCE],
            "routes": [{"methods": ["GET"], "path": ROUTE, "scopes": ["read:orders"]}],
        }
        import_tenants(plat.env, stack.workdir, [tenant])
        web_url, _ = start_web(plat, "config.wsgi")
        urls = start_nginx(stack, web_url, secret)
        token = mint_token(plat)
        check_allowed(urls["nginx_decision"], token)
        urls["platform_public"] = web_url
        results = measure(urls, token, args.seconds, stack.workdir)
    print(f"mode {args.mode}, {args.seconds} s per scenario, wrk 1 thread 4 connections")
    report(results)


if __name__ == "__main__":
    main()
