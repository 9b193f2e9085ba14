"""High-throughput screening: sample -> validate -> filter -> deduplicate -> novelty -> rank -> export.

    from crystalgen.screening import ScreenConfig, run_screen
    result = run_screen(ScreenConfig.from_toml("examples/screen_chgnet.toml"), "runs/screen")

See docs/screening.md; the command line is ``crystalgen screen CONFIG.toml --out RUN_DIR``.
"""

from crystalgen.screening.config import ScreenConfig, Target
from crystalgen.screening.pipeline import ScreenResult, run_screen

__all__ = ["ScreenConfig", "ScreenResult", "Target", "run_screen"]
