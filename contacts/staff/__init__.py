"""The contacts pages of the staff app (/app/contacts/): search (masked), a contact's detail with
consent evidence and history, upsert, opt-out, and the CSV import with per-row errors."""
