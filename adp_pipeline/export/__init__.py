"""Training sets from the lake: record formats (``formats``) and the streaming writer (``writer``)."""

from adp_pipeline.export.formats import FORMATS, REGISTRY, ExportFormat, Format, tool_call_id
from adp_pipeline.export.writer import ExportSummary, check_export, export_training_set, sidecar_path, split_of

__all__ = [
    "FORMATS",
    "REGISTRY",
    "ExportFormat",
    "ExportSummary",
    "Format",
    "check_export",
    "export_training_set",
    "sidecar_path",
    "split_of",
    "tool_call_id",
]
