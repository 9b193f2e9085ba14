"""Analogue-guided structure prediction: most new compounds adopt a known prototype.

index: a reference corpus keyed by anonymous formula, cached next to the corpus.
substitution: element mappings ranked by pymatgen's data-mined substitution probabilities.
volume: a least-squares atomic-volume rule that rescales a substituted cell.
candidates: the ranked candidate structures for a composition, with provenance.
exclusion: removing the crystals being scored from the corpus (evaluation).
energy: CHGNet single-point energies as a ranking term.
generator: `AnalogueGenerator`, the harness-facing generator.
"""
