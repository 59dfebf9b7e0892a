"""`labrun new NAME`: a project of the user's own that meets labrun's contract."""
