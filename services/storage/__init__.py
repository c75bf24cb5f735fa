"""The storage service: accounts, credentials and every durable piece of per-user data.

:mod:`services.core.storage` is the typed Protocol the rest of the server
uses; :class:`services.storage.store.Store` implements it over SQLite or
PostgreSQL; the schema lives in ``migrations/`` (see :mod:`services.platform.migrate`).
"""
