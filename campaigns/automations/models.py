"""Models of the automations app."""
