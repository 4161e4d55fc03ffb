"""Settings, their sources, and hardware profiles."""
