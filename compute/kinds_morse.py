"""Task kinds of kinds_morse (filled in by its issue)."""
