"""crystalgen.backbone"""
