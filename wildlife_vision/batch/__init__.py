"""Batch scoring engines beyond one process: Ray Data (`predict --engine ray`, the [ray] extra) and --shard I/N."""
