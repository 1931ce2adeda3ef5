"""Models for the campaigns app (filled by its issue)."""
