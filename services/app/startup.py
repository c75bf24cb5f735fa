"""Start-up steps that depend on settings, each failing as a StartupError
that names the setting (the one-line message ``xmppd`` prints) rather than
with the traceback of whatever library call failed underneath."""

from __future__ import annotations

import logging
import sqlite3
import ssl

from ..platform import tls
from ..platform.config import Settings, StartupError
from ..platform.db import Database, DatabaseError, open_database
from ..xmpp.sasl import tls_server_end_point

log = logging.getLogger("xmppd")


def load_tls(settings: Settings) -> tuple[ssl.SSLContext, bytes | None]:
    """The server's TLS context and its channel-binding data, making a
    self-signed certificate in the data folder on first start."""
    cert, key = settings.cert_paths()
    setting = "tls_cert" if settings.tls_cert else "data_dir"
    try:
        if tls.ensure_self_signed(cert, key, settings.hosts):
            hosts = ",".join(settings.hosts)
            log.info("created a self-signed certificate for %s in %s", hosts, cert)
        return tls.server_context(cert, key), tls_server_end_point(tls.cert_der(cert))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise StartupError(setting, cert, getattr(exc, "strerror", None) or exc) from None


async def open_configured_database(settings: Settings) -> Database:
    url = settings.resolved_database_url()
    setting = "database_url" if settings.database_url else "data_dir"
    try:
        return await open_database(url)
    except (OSError, sqlite3.Error, DatabaseError, ValueError) as exc:
        raise StartupError(setting, url, getattr(exc, "strerror", None) or exc) from None
    except Exception as exc:  # asyncpg's errors: connection refused, unknown database, auth
        if type(exc).__module__.startswith("asyncpg"):
            raise StartupError(setting, url, exc) from None
        raise
