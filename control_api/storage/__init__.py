"""Storage: one SQL layer over SQLite (default) and PostgreSQL (cluster)."""
