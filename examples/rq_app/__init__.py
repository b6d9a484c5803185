"""A small RQ application whose jobs record every run in a JSON-lines file."""
