"""Task synthesis: essence extraction, mutation, deduplication and lineage (DESIGN.md §3).

Imports only ``runtimes.protocol`` and ``runtimes.llm`` from below; never dagster.
"""
