"""Checkers built from each export format's consumer's own code or published text (issue #18).

Each module vendors the owner's rules with a header naming repository, path, commit and license,
so a test can hold an adp export against what the consumer really does, not our reading of it:

- ``llamafactory``: LLaMA-Factory's sharegpt-with-tools loader (``check_sharegpt``).
- ``openai_finetune``: OpenAI's fine-tuning chat-format line (``check_openai_line``).
"""
