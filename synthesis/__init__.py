"""Task synthesis: essence extraction, sampling, mutation, self-check, deduplication and lineage
(DESIGN.md §3).

Imports only ``runtimes.core`` (the wire format) and ``runtimes.llm`` (the model client) from
below, never dagster. Running candidates is the caller's: ``adp_pipeline.synthesize`` runs them
on the pipeline's own execution path. ``miniwob_solvers`` derives a MiniWoB++ episode's gold
script from its instruction (pure functions, no browser): the reseed's and the examples'.
"""
