"""Crystal <-> sequence representation (Wyckoff form, vocabulary, grammar).

Importing this package needs only numpy; pyxtal/pymatgen load lazily inside
`WyckoffCrystal.from_structure`, `WyckoffCrystal.to_structure` and `guess_oxidation`.
See docs/sequence_format.md.
"""
from crystalgen.representation.grammar import Grammar, NoLegalCompletion, ValueSlot
from crystalgen.representation.sequence import (
    Conditioning,
    DecodeError,
    EncodedCrystal,
    EncodeError,
    Plan,
    PlanElement,
    decode,
    decode_plan,
    encode,
    encode_from_arrays,
    encode_prefix,
)
from crystalgen.representation.vocab import VOCAB, VOCAB_SIZE
from crystalgen.representation.wyckoff import WyckoffCrystal, WyckoffError, WyckoffSite

__all__ = [
    "Conditioning", "DecodeError", "EncodeError", "EncodedCrystal", "Grammar", "NoLegalCompletion", "Plan",
    "PlanElement", "VOCAB", "VOCAB_SIZE", "ValueSlot", "WyckoffCrystal", "WyckoffError", "WyckoffSite",
    "decode", "decode_plan", "encode", "encode_from_arrays", "encode_prefix",
]
