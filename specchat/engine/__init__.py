"""The speculative-decoding engine: yields events (events.py), knows no UI."""
