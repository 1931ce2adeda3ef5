"""Models of the OTP app."""
