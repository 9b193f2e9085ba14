"""The layering rule: no import cycle, no upward import (crystalgen.devtools.imports)."""

from crystalgen.devtools import imports


def test_no_import_cycle_and_no_upward_import():
    assert imports.problems() == []


def test_the_checker_finds_a_cycle_and_an_upward_import():
    edges = {"crystalgen.generation.decoder": {"crystalgen.api"}, "crystalgen.api": {"crystalgen.generation.decoder"}}
    assert imports.cycles(edges) == [["crystalgen.api", "crystalgen.generation.decoder"]]
    assert imports.upward(edges) == ["crystalgen.generation.decoder -> crystalgen.api: upward import"]


def test_the_root_package_is_a_lazy_top_layer_facade():
    edges = imports.graph()
    assert "crystalgen.api" in edges["crystalgen"]  # crystalgen.CrystalGenerator, through __getattr__
    assert imports.layer("crystalgen") == 0 < imports.layer("crystalgen.cli") < imports.layer("crystalgen.api")
    assert imports.eager_root_imports((imports.ROOT / "crystalgen" / "__init__.py").read_text()) == []
    lazy = "def __getattr__(name):\n    from crystalgen import api\n    return getattr(api, name)\n"
    assert imports.eager_root_imports(lazy) == []
    for eager in ("from crystalgen import api\n", "import crystalgen.api\n", "from .api import CrystalGenerator\n",
                  "def helper():\n    from crystalgen.api import CrystalGenerator\n"):
        assert len(imports.eager_root_imports(eager)) == 1, eager


def test_an_import_inside_a_function_is_an_edge(tmp_path):
    """A function-level import cannot dodge the layering: it is checked like any other."""
    source = tmp_path / "decoder.py"
    source.write_text("def finish():\n    from crystalgen.api import CrystalGenerator\n    return CrystalGenerator\n")
    known = set(imports.modules())
    found = set(imports._imports("crystalgen.generation.decoder", source, known))
    assert "crystalgen.api" in found
    assert imports.upward({"crystalgen.generation.decoder": found}) == [
        "crystalgen.generation.decoder -> crystalgen.api: upward import"]
