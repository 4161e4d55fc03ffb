"""heretic: unattended abliteration of open-weight chat models."""

__version__ = "0.1.0"
