"""Static HTML reports of explanation runs (``onnxplain report``).

    run = onnxplain.report.read_results("onnxplain-out")            # explain folder or Parquet results
    onnxplain.report.write_report(run, "report-dir")                  # -> report-dir/index.html

or from Python explanations::

    run = onnxplain.report.from_explanations(model, [(image, [exp1, exp2])])
    onnxplain.report.write_report(run, "report-dir")
"""
from __future__ import annotations

from .html import write_report
from .records import (ImageRecord, MapRecord, ReportError, RunRecord, explain_record, from_explain_summary,
                      from_explanations, from_parquet, read_results)

__all__ = ["write_report", "read_results", "from_explain_summary", "explain_record", "from_parquet", "from_explanations",
           "RunRecord", "ImageRecord", "MapRecord", "ReportError"]
