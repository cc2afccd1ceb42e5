"""Training sets from the lake: record formats (``formats``) and the streaming writer (``writer``)."""

from adp_pipeline.export.formats import FORMATS, ExportFormat
from adp_pipeline.export.writer import ExportSummary, check_export, export_training_set, split_of

__all__ = ["FORMATS", "ExportFormat", "ExportSummary", "check_export", "export_training_set", "split_of"]
