"""Admin of the OTP app. The abuse defence's pages live in admin_abuse.py."""

from campaigns.otp import admin_abuse  # noqa: F401  (registers PumpingBlock and OtpRateCounter)
