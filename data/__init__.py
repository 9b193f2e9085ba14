"""crystalgen.data"""
