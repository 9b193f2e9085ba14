"""crystalgen.heads"""
