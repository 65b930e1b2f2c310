"""The speculative loop: the engine thread (host), the chat session, the draft -> verify -> accept
loop, its events, sampling and verification, detokenization, alternatives verified as a tree."""
