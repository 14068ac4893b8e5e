"""Result tables (Markdown, CSV, LaTeX) and figures from a sweep's summary.json."""
from .tables import SETTINGS, Cell, aggregate, build_table, selection_gaps, write_report

__all__ = ["SETTINGS", "Cell", "aggregate", "build_table", "selection_gaps", "write_report"]
