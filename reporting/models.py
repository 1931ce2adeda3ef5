"""Models for the reporting app (filled by its issue)."""
