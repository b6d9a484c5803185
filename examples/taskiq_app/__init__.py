"""A small taskiq application whose tasks record every run in a JSON-lines file."""
