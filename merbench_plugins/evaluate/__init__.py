"""Evaluation: metrics, robust evaluation and its conditions, per-condition tables, summaries, reports, the corruption benchmark."""
