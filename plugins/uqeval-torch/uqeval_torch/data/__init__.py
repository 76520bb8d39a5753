"""Datasets: images with several raters' labels, split into roles and OOD domains."""
