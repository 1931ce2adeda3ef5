"""Models for the gateways app (filled by its issue)."""
