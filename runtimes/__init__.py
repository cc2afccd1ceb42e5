"""The execution engine, usable without Dagster: one subpackage per concern, each with its
public API in its ``__init__`` (``__all__``) and its implementation in private modules.

- ``core``: the wire format (TaskSpec, Step, Trajectory, ErrorType), the exception tree, the
  task-file parser, URL rules; imports nothing else of adp.
- ``sandbox``: ``python_executor`` in bubblewrap. ``web``: Chromium through Playwright.
- ``llm``: the OpenAI-compatible client, its cache and endpoint config, the policies.
- ``agent``: the one tool-calling loop, its tools and verifiers, the batch runner.
- ``settings``: every setting adp reads, and the components built from them.
- ``scale``: Redis Streams broker, the ``adp worker`` process, its metrics.
- ``testing``: the scripted OpenAI-compatible server behind the ``mock`` policy; loaded only
  when that policy runs.
"""
