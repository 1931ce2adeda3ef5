"""The reporting pages of the staff app (/app/reports/ and /app/inbox/): a campaign's report with
its chart and link clicks, its conversion attribution with the rules, and the user's own inbox."""
