"""Serving a language model: prefill, decode steps and the KV cache (docs/conventions.md, "Serving: prefill, decode
and the KV cache"). :func:`analyze_generation` costs one generation; :func:`max_context` and
:func:`max_serving_batch` find the longest context and the largest batch whose generation fits a memory budget."""

from torchcost.serve.fit import ServingFit, max_context, max_serving_batch
from torchcost.serve.generation import analyze_generation
from torchcost.serve.report import CacheGroup, DecodePiece, GenerationReport
from torchcost.serve.steps import StepCost

__all__ = ["CacheGroup", "DecodePiece", "GenerationReport", "ServingFit", "StepCost", "analyze_generation",
           "max_context", "max_serving_batch"]
