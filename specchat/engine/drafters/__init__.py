"""Drafters: the protocol, n-gram lookup, a transformers model, the trained drafters
(tokens alone, and the one reading the target's states), their CPU passes and loading."""
