"""The Textual front end: chat with provenance colouring, gauges, round inspector, replay."""
