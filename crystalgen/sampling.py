"""The decoder's entry points under their older module name, for ``crystalgen.training``
(its validity probe samples through :func:`generate_batch`). New code imports
:mod:`crystalgen.generation.decoder`."""

from crystalgen.generation.decoder import SampledSequence, generate_batch, generate_stream

__all__ = ["SampledSequence", "generate_batch", "generate_stream"]
