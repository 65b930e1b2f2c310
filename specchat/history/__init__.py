"""Conversation history: one SQLite store for chat conversations and one-shot answers.

store.py (the database), importer.py (the old JSON-lines conversations, once),
recorder.py (records as they stream -> rows), rebuild.py (rows + trace files -> a
transcript for the chat screen), markdown.py (a conversation as Markdown),
command.py (`specchat history`), oneshot.py (one-shot logging and -c).
"""
