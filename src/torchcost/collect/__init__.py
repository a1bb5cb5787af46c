"""Collectors: they watch one run of the model and record what happened; they never print and never price anything
beyond asking the formula registry."""
