"""A prepared corpus of the 60-structure pool sample (tests/fixtures/pool_sample.csv.gz),
built once per test process with `crystalgen.data.prepare` (about 5 s), and its encodings."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

FIXTURE_CSV = Path(__file__).parent / "fixtures" / "pool_sample.csv.gz"


@lru_cache(maxsize=1)
def fixture_corpus_path() -> Path:
    from crystalgen.data.prepare import PrepareConfig, prepare

    out = Path(tempfile.mkdtemp(prefix="crystalgen-train-")) / "pool_sample.h5"
    prepare([FIXTURE_CSV], out, PrepareConfig(workers=1, progress=False))
    return out


@lru_cache(maxsize=1)
def fixture_sequences():
    """`EncodedCorpus` of the fixture corpus (both tasks per structure)."""
    from crystalgen.data.corpus import read_corpus
    from crystalgen.training.dataset import encode_corpus

    return encode_corpus(read_corpus(fixture_corpus_path()), progress=False)


def one_thread():
    """Generator for a module fixture: torch on one thread, restored afterwards.

    Tiny models gain nothing from a second thread, and on a shared, busy CPU spinning
    OpenMP threads can make each step tens of times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=1)
def fixture_sequences_augmented():
    """`EncodedCorpus` of the fixture corpus with up to 8 equivalent forms per structure."""
    from crystalgen.data.corpus import read_corpus
    from crystalgen.training.dataset import encode_corpus

    return encode_corpus(read_corpus(fixture_corpus_path()), progress=False, max_forms=8)
