"""The layering rule: no import cycle, no upward import (crystalgen.devtools.imports)."""

from crystalgen.devtools import imports


def test_no_import_cycle_and_no_upward_import():
    assert imports.problems() == []


def test_the_checker_finds_a_cycle_and_an_upward_import():
    edges = {"crystalgen.generation.decoder": {"crystalgen.api"}, "crystalgen.api": {"crystalgen.generation.decoder"}}
    assert imports.cycles(edges) == [["crystalgen.api", "crystalgen.generation.decoder"]]
    assert imports.upward(edges) == ["crystalgen.generation.decoder -> crystalgen.api: upward import"]
