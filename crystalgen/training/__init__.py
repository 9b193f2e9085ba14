"""Training loop for the crystal model."""
