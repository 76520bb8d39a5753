"""Figures and other human-readable output of ``uqeval score`` (import submodules explicitly)."""
