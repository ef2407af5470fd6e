"""Offline evaluation of the detectors: how well they find the faults a labelled stream holds.

- :mod:`evaluation.scoring` — pure: alerts matched to fault labels; precision, recall, F1,
  detection delay, false alarms per 1,000 elevator-days (``tianyan score``'s and the
  notebooks' rules).
- :mod:`evaluation.runs` — a simulated or recorded stream run through the worker's own
  ingest and detectors (:class:`streams.ingest.Ingest`), then scored (``tianyan evaluate``).
"""
