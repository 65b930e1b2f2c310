"""specchat: terminal chat on a local speculative-decoding engine that shows its speculation."""

__version__ = "0.1.0"
