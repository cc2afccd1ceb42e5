"""Training sets from the lake: record formats (``formats``) and the streaming writer (``writer``)."""

from adp_pipeline.export.formats import FORMATS, ExportFormat
from adp_pipeline.export.writer import ExportSummary, export_training_set, split_of

__all__ = ["FORMATS", "ExportFormat", "ExportSummary", "export_training_set", "split_of"]
