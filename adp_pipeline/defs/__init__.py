"""Dagster definitions, one folder per domain (dagster-open-platform layout)."""
