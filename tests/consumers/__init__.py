"""Checkers that hold an adp export against its consumer's own code (issue #18), none of it copied
here (tests/consumers/README.md):

- ``llamafactory``: LLaMA-Factory's sharegpt loading, run with the code of its pinned wheel, which
  ``make setup`` unpacks into ``upstream/`` (``check_sharegpt``).
- ``openai_finetune``: OpenAI's fine-tuning chat format, with the installed ``openai`` SDK's types
  (``check_openai_line``).
"""
