"""z4j-scheduler: decides when scheduled tasks run, for six task engines at once."""

__version__ = "0.1.0"
