"""The campaigns pages of the staff app (/app/campaigns/): the composer, the list with live
progress, the detail with batches, failures, retry preview and resend."""
