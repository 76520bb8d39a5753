"""Presentation of results: report folders and ``scores.json``, tables, figures and summaries
(import submodules explicitly)."""
