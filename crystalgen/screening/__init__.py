"""High-throughput screening pipeline."""
