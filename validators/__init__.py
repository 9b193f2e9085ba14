"""crystalgen.validators"""
