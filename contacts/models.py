"""Models for the contacts app (filled by its issue)."""
