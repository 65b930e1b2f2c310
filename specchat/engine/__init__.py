"""The speculative-decoding engine: yields events (loop/events.py), knows no UI."""
