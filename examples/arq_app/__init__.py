"""A small arq application whose tasks record every run in a JSON-lines file."""
