"""`crystalgen sample --only-valid` that falls short says how many were tried and which check failed most."""

from __future__ import annotations

from click.testing import CliRunner

from crystalgen.cli import main


def test_only_valid_shortfall_says_how_many_and_what_failed(tmp_path):
    # NaCl2 can never be charge-balanced (Na+ with Cl-), so every crystal fails the charge check
    out = tmp_path / "never"
    res = CliRunner().invoke(main, ["sample", "--formula", "NaCl2", "-n", "2", "--seed", "0", "--only-valid",
                                    "--out", str(out)])
    assert res.exit_code != 0 and not out.exists()
    assert "0 of 2 requested crystals passed every check in 20 attempts" in res.output, res.output
    assert "checks failing most among the first 2 drawn: charge 2 of 2" in res.output, res.output
