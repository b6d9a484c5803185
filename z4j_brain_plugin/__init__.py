"""The brain: stores schedules, records fires and hands them to task engines."""
