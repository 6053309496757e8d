"""Pipelines: the model, loading from YAML or dicts, validation and templating."""

from __future__ import annotations

from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.loader import PipelineSource, check_plugins, load_pipeline, parse_yaml
from mimir.core.pipeline.models import Pipeline, Step
from mimir.core.pipeline.templating import render

__all__ = [
    "Pipeline",
    "PipelineSource",
    "Step",
    "ValidationIssue",
    "check_plugins",
    "load_pipeline",
    "parse_yaml",
    "render",
]
