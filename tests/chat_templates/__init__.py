"""Real chat templates of tool-calling model families, and the check that renders exported records
through them (see README.md)."""
