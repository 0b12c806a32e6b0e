"""Generation: turning token ids into more token ids, greedily, for evaluation and serving alike.

- :mod:`sqltune.generation.request` - :class:`GenRequest`, :class:`EngineConfig`, :class:`EngineError`.
- :mod:`sqltune.generation.base` - :class:`~sqltune.generation.base.BaseEngine`: queue, scheduler thread,
  admission, stop rules, stats.
- :mod:`sqltune.generation.engine` - the continuous-batching slot scheduler and ``build_engine``.
- :mod:`sqltune.generation.fallback` - dynamic batching around ``model.generate``.
- :mod:`sqltune.generation.runner` - the model runner: slot KV cache, device buffers, CUDA graphs.
- :mod:`sqltune.generation.passes` - prefill and decode passes of a Llama-family model.
- :mod:`sqltune.generation.layers` - the per-layer math; :mod:`sqltune.generation.kernels` - Triton.
- :mod:`sqltune.generation.generate` - the plain batched ``model.generate`` helper.
- :mod:`sqltune.generation.sampling` - seeded temperature/top-p sampling of one prompt (:class:`Sampling`).

Only the request types load here; the modules that need torch are imported by name.
"""

from sqltune.generation.request import GREEDY, EngineConfig, EngineError, GenRequest, Sampling

__all__ = ["GREEDY", "EngineConfig", "EngineError", "GenRequest", "Sampling"]
