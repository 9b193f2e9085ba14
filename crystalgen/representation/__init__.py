"""Crystal <-> sequence representation (Wyckoff form, vocabulary, grammar)."""
