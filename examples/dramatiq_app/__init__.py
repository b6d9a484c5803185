"""A small Dramatiq application whose actors record every run in a JSON-lines file."""
