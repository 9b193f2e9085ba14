"""Round-trip match rate of the sequence representation over the training pool, and grammar speed.

    nice python benchmarks/bench_roundtrip.py [--pool /work/shared/data/train/pool.csv.gz] [--limit N]

Per structure: CIF -> WyckoffCrystal.from_structure -> encode -> decode -> to_structure,
matched against the original with StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3);
the encoded sequence is also replayed through the Grammar (max_atoms unbounded).
"Usable" = the vocabulary can hold the crystal (Z, counts, fu in range). Then grammar
speed: random walks for a batch of 256 sequences of one composition (sampling-like)
and the replay of encoded sequences, in microseconds per next_allowed+advance step.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from multiprocessing import Pool

import numpy as np
import pandas as pd
from tqdm import tqdm

from crystalgen.representation.grammar import Grammar, ValueSlot
from crystalgen.representation.random_walk import random_completion
from crystalgen.representation.sequence import EncodeError, encode, decode, Conditioning, encode_prefix
from crystalgen.representation.vocab import PLAN
from crystalgen.representation.wyckoff import WyckoffCrystal, WyckoffError

POOL = "/work/shared/data/train/pool.csv.gz"


def replay(encoded, max_atoms: int = 100_000) -> int:
    """Replay a sequence through the grammar; returns the number of steps (raises on a violation)."""
    k = int(np.flatnonzero(encoded.tokens == PLAN)[0]) + 1
    state = Grammar.start(encoded.tokens[:k], max_atoms=max_atoms)
    for tok, val in zip(encoded.tokens[k:], encoded.values[k:]):
        allowed = state.next_allowed()
        if isinstance(allowed, ValueSlot):
            if not allowed.free and abs(allowed.derived_value - float(val)) > 1e-6:
                raise AssertionError(f"derived {allowed.derived_value} != encoded {val}")
        elif not allowed[tok]:
            raise AssertionError(f"token {tok} not allowed")
        state.advance(int(tok), float(val))
    if not state.done:
        raise AssertionError("grammar not finished at end of sequence")
    return len(encoded.tokens) - k


def check(cif: str) -> str:
    """Outcome of one structure: 'match' or a failure reason."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    warnings.simplefilter("ignore")
    structure = Structure.from_str(cif, fmt="cif")
    try:
        crystal = WyckoffCrystal.from_structure(structure)
    except WyckoffError:
        return "wyckoff conversion failed"
    try:
        encoded = encode(crystal, None, task="csp")
    except EncodeError as exc:
        return "unusable: " + str(exc).split(" outside")[0]
    try:
        rebuilt = decode(encoded.tokens, encoded.values).to_structure()
    except Exception as exc:
        return f"decode error: {type(exc).__name__}"
    try:
        replay(encoded)
    except Exception as exc:
        return f"grammar rejects: {type(exc).__name__}"
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    return "match" if matcher.fit(structure, rebuilt) else "no match"


def grammar_speed(n_seq: int = 256) -> float:
    """Microseconds per next_allowed + advance step over a sampling-sized batch of one composition.

    The batch's sequences are random grammar walks (made first, untimed), then replayed
    through fresh states as a sampler would step them: one next_allowed and one advance
    per position.
    """
    prefix = encode_prefix(Conditioning({"Ba": 1, "Ti": 1, "O": 3}), "csp")
    rng = np.random.default_rng(0)
    walks = [random_completion(Grammar.start(prefix), rng) for _ in range(n_seq)]
    steps, t0 = 0, time.perf_counter()
    for toks, vals in walks:
        state = Grammar.start(prefix)
        for tok, val in zip(toks, vals):
            state.next_allowed()
            state.advance(tok, val)
        steps += len(toks)
    return (time.perf_counter() - t0) / steps * 1e6


def codec_speed(cifs) -> dict[str, float]:
    """Per-structure times (ms) of each conversion step over `cifs`, in this process."""
    from pymatgen.core import Structure

    warnings.simplefilter("ignore")
    structures = [Structure.from_str(c, fmt="cif") for c in cifs]
    times: dict[str, float] = {}

    def timed(name, fn, items):
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        times[name] = (time.perf_counter() - t0) / len(items) * 1e3
        return out

    crystals = timed("from_structure", WyckoffCrystal.from_structure, structures)
    encoded = timed("encode", lambda c: encode(c, None), crystals)
    decoded = timed("decode", lambda e: decode(e.tokens, e.values), encoded)
    timed("to_arrays", lambda c: c.to_arrays(), decoded)
    timed("grammar replay (whole sequence, first sight of composition)", replay, encoded)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=POOL)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--speed-only", action="store_true", help="skip the round trip; time each step on 200 rows")
    args = ap.parse_args()
    df = pd.read_csv(args.pool, nrows=args.limit)
    if args.speed_only:
        for name, ms in codec_speed(df.cif[:200]).items():
            print(f"{name}: {ms:.2f} ms/structure")
        print(f"grammar random walk (256 x BaTiO3): {grammar_speed():.1f} us/step")
        return
    t0 = time.perf_counter()
    with Pool(args.processes) as pool:
        outcomes = list(tqdm(pool.imap(check, df.cif, chunksize=16), total=len(df), desc="round trip"))
    elapsed = time.perf_counter() - t0
    counts = Counter(outcomes)
    usable = sum(n for k, n in counts.items() if not k.startswith("unusable"))
    print(f"structures: {len(df)}, usable: {usable}, time: {elapsed:.0f} s ({args.processes} processes)")
    print(f"match rate over usable: {counts['match'] / usable:.4f}; over all: {counts['match'] / len(df):.4f}")
    for reason, n in counts.most_common():
        print(f"  {reason}: {n}")
    print(f"grammar random walk (256 x BaTiO3): {grammar_speed():.1f} us/step")


if __name__ == "__main__":
    main()
