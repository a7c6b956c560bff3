"""``manage.py devissuer``: run the development issuer in the foreground."""

import signal
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devissuer.issuer import DevIssuerServer, DevKeyStore


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    """Serve Auth0-like issuers at ``http://HOST:PORT/<name>/`` until Ctrl-C or SIGTERM."""

    help = "Run the development issuer: Auth0-like issuers, one per URL path, no account needed."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the command line options."""
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--key-dir", type=Path, default=None, help="where keys persist")
        parser.add_argument(
            "--public-url",
            default=None,
            help="base URL the issuers are reached at, if not http://HOST:PORT (e.g. in Docker)",
        )
        parser.add_argument("--verbose", action="store_true", help="log every request")

    def handle(self, *args: Any, **options: Any) -> None:
        """Serve until interrupted."""
        key_dir = options["key_dir"] or getattr(
            settings, "DEVISSUER_KEY_DIR", settings.BASE_DIR / "var" / "devissuer"
        )
        try:
            server = DevIssuerServer(
                options["host"],
                options["port"],
                DevKeyStore(Path(key_dir)),
                public_url=options["public_url"],
                verbose=options["verbose"],
            )
        except OSError as exc:
            address = f"{options['host']}:{options['port']}"
            raise CommandError(f"Cannot listen on {address}: {exc}") from exc
        self.stdout.write(self._banner(server, key_dir))
        self.stdout.flush()  # the banner must show even when stdout is a pipe
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("Dev issuer stopped.")
        finally:
            server.server_close()

    def _banner(self, server: DevIssuerServer, key_dir: Path) -> str:
        token_url = f"{server.url_for('demo')}oauth/token"
        return (
            f"Dev issuer on {server.base_url} (keys in {key_dir}); issuer example: "
            f"{server.url_for('demo')}; mint a token: curl -s -X POST {token_url} "
            "-H 'Content-Type: application/json' -d '{\"audience\": \"https://api.example\"}'"
        )
