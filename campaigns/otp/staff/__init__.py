"""The OTP pages of the staff app (/app/otp/): the template list, a request for a new template or a new
version (always held for an approver) and the verifications, masked."""
