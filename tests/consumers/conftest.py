"""The consumers' unpacked packages (``upstream/``, fetched by ``make setup``) are their owners' code,
imported by the checkers, never test modules of ours: LLaMA-Factory's wheel ships a
``train/test_utils.py`` that pytest would otherwise try to collect (and fail to import without torch)."""

collect_ignore_glob = ["upstream/*"]
