"""The service's Alembic chain (version table `service_alembic_version`)."""
