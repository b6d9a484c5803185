"""Example applications that z4j-scheduler fires tasks into, one per engine."""
