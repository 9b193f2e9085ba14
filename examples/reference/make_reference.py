"""Write the reference CIFs of this folder (run from the repository root).

NaCl is taken from the training pool (Materials Project mp-22862). The pool holds no
olivine LiFePO4 and no cubic SrTiO3 (only Cmcm, I-4 and Fdd2 LiFePO4 cells, I4/mcm
SrTiO3, and P4mm SrTiO3 in Perov-5), so those two are built from their experimental
lattice and Wyckoff parameters with pymatgen:

    python examples/reference/make_reference.py [/path/to/shared/data/train/pool.csv.gz]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

HERE = Path(__file__).parent
MP = "CC BY 4.0 (Materials Project; Jain et al., APL Materials 1, 011002, 2013)"


def olivine_lifepo4() -> Structure:
    """Triphylite LiFePO4, Pnma: Li 4a, Fe/P/O1/O2 4c, O3 8d (experimental parameters)."""
    return Structure.from_spacegroup(
        "Pnma", Lattice.orthorhombic(10.332, 6.010, 4.692), ["Li", "Fe", "P", "O", "O", "O"],
        [[0, 0, 0], [0.28222, 0.25, 0.97472], [0.09486, 0.25, 0.41820], [0.09678, 0.25, 0.74279],
         [0.45710, 0.25, 0.20602], [0.16558, 0.04646, 0.28478]],
    )


def cubic_srtio3() -> Structure:
    """Room-temperature cubic perovskite SrTiO3, Pm-3m, a = 3.905 Å: Sr 1a, Ti 1b, O 3c."""
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]])


def pool_structure(pool: str, material_id: str) -> tuple[Structure, str]:
    rows = pd.read_csv(pool)
    row = rows[rows.material_id == material_id].iloc[0]
    return Structure.from_str(row.cif, fmt="cif"), row.source


def write(name: str, structure: Structure, header: str) -> None:
    text = str(CifWriter(structure, symprec=0.01))
    (HERE / f"{name}.cif").write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)


def main(pool: str = "../shared/data/train/pool.csv.gz") -> None:
    nacl, source = pool_structure(pool, "mp-22862")
    write("NaCl", nacl, f"NaCl, rock salt (Fm-3m). Materials Project mp-22862, training pool source {source}.\n{MP}")
    write("LiFePO4", olivine_lifepo4(),
          "LiFePO4, olivine / triphylite (Pnma). Not in the training pool: built by examples/reference/make_reference.py\n"
          "from the experimental lattice (a 10.332, b 6.010, c 4.692 A) and Wyckoff parameters of triphylite.")
    write("SrTiO3", cubic_srtio3(),
          "SrTiO3, cubic perovskite (Pm-3m), a = 3.905 A (room temperature). Not in the training pool:\n"
          "built by examples/reference/make_reference.py (Sr 1a, Ti 1b, O 3c).")


if __name__ == "__main__":
    main(*sys.argv[1:])
