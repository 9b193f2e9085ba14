"""Evaluation harness: the field's CSP and de novo metrics, with a PyXtal baseline."""
