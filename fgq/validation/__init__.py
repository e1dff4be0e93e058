"""The Fisher-validation experiment: per-block measurement (``measure``), statistics (``correlation``), the job."""
