"""The reference host: ledger, distributor service and CLI support.

Importable only with the host extra (`pip install 'jobfleet-core[host]'`): it needs SQLAlchemy
and Alembic, which third-party plugins depending on `jobfleet-core` must not pull in. Nothing in
`jobfleet.core` outside this package imports it.
"""
