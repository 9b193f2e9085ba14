"""Checks on the code base itself (not shipped behaviour): ``python -m crystalgen.devtools.imports``."""
