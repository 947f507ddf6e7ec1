"""Task kinds of kinds_levelset (filled in by its issue)."""
