"""Labelled-photo intake: near-duplicate detection, leakage-safe splits, Label Studio round trips, statistics.

Needs only numpy and Pillow (no torch), except the optional embedding similarity."""
