"""`specchat bench`: speculation against the same engine with speculation off.

prompts (the built-in set, or a JSON-lines file) → runner (baseline and drafter,
alternating, after a warm-up; optional transformers peers) → report (JSON, table).
"""
