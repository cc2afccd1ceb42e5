"""The execution engine: wire format, task files, and (later) sandbox, browser, LLM and
agent runtimes. Usable without Dagster."""
