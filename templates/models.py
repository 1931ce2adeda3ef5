"""Models for the templates app (filled by its issue)."""
