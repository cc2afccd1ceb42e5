"""adp's Dagster layer: assets, checks, sensors, jobs, resources and the ``adp`` CLI.

The only package that imports dagster (DESIGN.md §2).
"""
