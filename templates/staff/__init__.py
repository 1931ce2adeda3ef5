"""The templates pages of the staff app (/app/templates/): the list, the editor (a new immutable
version each save, with the live copy counter) and a diff between any two versions."""
