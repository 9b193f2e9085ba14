"""The token vocabulary of the crystal sequence format (fixed order: ids are stable).

Id ranges, in order (see docs/sequence_format.md):

| tokens | count | meaning |
|---|---|---|
| `<pad>` `<bos>` `<eos>` `<task:csp>` `<task:gen>` `<plan>` `</plan>` `<lat>` | 8 | specials (`<pad>` = 0) |
| `<el:H>` .. `<el:Pu>` | 94 | elements Z = 1..94 |
| `<cnt:1>` .. `<cnt:48>` | 48 | element count in the reduced formula (prefix) |
| `<fu:1>` .. `<fu:12>` | 12 | formula units in the primitive cell (prefix) |
| `<Z:1>` .. `<Z:24>` | 24 | formula units in the conventional cell (plan) |
| `<sg:1>` .. `<sg:230>` | 230 | space groups |
| `<cs:triclinic>` .. `<cs:cubic>` | 7 | crystal systems |
| `<wy:a>` .. `<wy:z>` `<wy:A>` | 27 | Wyckoff letters |
| `<ox:-4>` .. `<ox:+8>` | 13 | oxidation states |
| `<vpa:0>` .. `<vpa:23>` | 24 | volume-per-atom bins, edges `VPA_EDGES` (Å³/atom) |
| `<v:a>` .. `<v:gamma>`, `<v:x>` `<v:y>` `<v:z>` | 9 | value-kind tokens (input at value positions) |
| `<sys:all>` `<sys:any>` | 2 | de novo element-set prompt: every listed element / a subset (prefix) |
| `<src:wbm>` .. `<src:carbon_24>` | 14 | source prompt: sample like this data source (prefix, :data:`SOURCES`) |

Tokens are only ever appended, so a model saved with a shorter vocabulary keeps its ids
(``CrystalModel.from_pretrained`` loads it and never emits the tokens it did not learn).

Counts run to 48 (not 20) because ~1.5% of the pool has reduced-formula counts above 20.
"""
from __future__ import annotations

import numpy as np

from crystalgen.representation.build_tables import LETTERS, SYSTEMS

ELEMENTS: tuple[str, ...] = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu"
).split()
MAX_COUNT, MAX_FU, MAX_Z = 48, 12, 24
OX_MIN, OX_MAX = -4, 8
#: Interior edges of the volume-per-atom bins (Å³/atom), log-spaced: bin b covers
#: [VPA_EDGES[b-1], VPA_EDGES[b]) with open ends for the first and last bin.
VPA_EDGES: np.ndarray = np.geomspace(5.0, 70.0, 23)
VALUE_KINDS = ("a", "b", "c", "alpha", "beta", "gamma", "x", "y", "z")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<task:csp>", "<task:gen>", "<plan>", "</plan>", "<lat>")
ELEMENT_SET_MODES = ("all", "any")
#: Data sources a prompt can name (`<src:NAME>`): the training pool's `source` tags, then two
#: benchmark families whose training splits are fine-tuning corpora of their own.
SOURCES = (
    "wbm", "mp_20_biternary/val", "mpts_52/val", "mp/matminer", "lemat/alexandria", "lemat/oqmd", "lemat/aflow",
    "lemat/mp", "mp_20/train_subset", "mp_20/val", "jarvis/supercon", "mp_40/test", "perov_5", "carbon_24",
)


def _ox(q: int) -> str:
    return f"<ox:{q:+d}>" if q else "<ox:0>"


TOKENS: tuple[str, ...] = (
    SPECIALS
    + tuple(f"<el:{e}>" for e in ELEMENTS)
    + tuple(f"<cnt:{n}>" for n in range(1, MAX_COUNT + 1))
    + tuple(f"<fu:{k}>" for k in range(1, MAX_FU + 1))
    + tuple(f"<Z:{k}>" for k in range(1, MAX_Z + 1))
    + tuple(f"<sg:{n}>" for n in range(1, 231))
    + tuple(f"<cs:{s}>" for s in SYSTEMS)
    + tuple(f"<wy:{c}>" for c in LETTERS)
    + tuple(_ox(q) for q in range(OX_MIN, OX_MAX + 1))
    + tuple(f"<vpa:{b}>" for b in range(len(VPA_EDGES) + 1))
    + tuple(f"<v:{k}>" for k in VALUE_KINDS)
    + tuple(f"<sys:{m}>" for m in ELEMENT_SET_MODES)
    + tuple(f"<src:{name}>" for name in SOURCES)
)
VOCAB: dict[str, int] = {t: i for i, t in enumerate(TOKENS)}
VOCAB_SIZE = len(TOKENS)

PAD, BOS, EOS, TASK_CSP, TASK_GEN, PLAN, END_PLAN, LAT = range(len(SPECIALS))
TASKS = {"csp": TASK_CSP, "gen": TASK_GEN}
EL0 = VOCAB["<el:H>"]  # id of element with atomic number Z is EL0 + Z - 1
CNT0 = VOCAB["<cnt:1>"]  # id of count n is CNT0 + n - 1
FU0 = VOCAB["<fu:1>"]
Z0 = VOCAB["<Z:1>"]
SG0 = VOCAB["<sg:1>"]  # id of space group n is SG0 + n - 1
CS0 = VOCAB["<cs:triclinic>"]
WY0 = VOCAB["<wy:a>"]  # id of letter l is WY0 + LETTERS.index(l)
OX0 = VOCAB[_ox(OX_MIN)]  # id of oxidation state q is OX0 + q - OX_MIN
VPA0 = VOCAB["<vpa:0>"]
V0 = VOCAB["<v:a>"]  # value-kind token of parameter i (a..gamma, x, y, z) is V0 + i
N_VPA = len(VPA_EDGES) + 1
SYS_ALL, SYS_ANY = VOCAB["<sys:all>"], VOCAB["<sys:any>"]  # element-set prompt of a de novo prefix
SYS_TOKENS = {"all": SYS_ALL, "any": SYS_ANY}
SRC0 = VOCAB[f"<src:{SOURCES[0]}>"]  # id of source prompt s is SRC0 + SOURCES.index(s)


def element_token(symbol: str) -> int:
    return EL0 + ELEMENTS.index(symbol)


def token_element(tok: int) -> str:
    return ELEMENTS[tok - EL0]


def source_token(name: str) -> int:
    """Id of ``<src:NAME>``; a ``ValueError`` naming the known sources for any other name."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return SRC0 + SOURCES.index(name)


def vpa_bin(volume_per_atom: float) -> int:
    return int(np.searchsorted(VPA_EDGES, volume_per_atom, side="right"))


def vpa_range(b: int) -> tuple[float, float]:
    """(low, high) volume per atom of bin `b` (0 and inf at the open ends)."""
    lo = float(VPA_EDGES[b - 1]) if b > 0 else 0.0
    hi = float(VPA_EDGES[b]) if b < len(VPA_EDGES) else float("inf")
    return lo, hi


def in_range(tok: int, first: int, n: int) -> bool:
    return first <= tok < first + n
