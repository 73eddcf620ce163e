"""The durable ledger: stream writer, SQLite and PostgreSQL stores, reconcile, recover."""
