"""``python -m wildlife_vision_train.benchmark``: the benchmark command, or (``--worker SPEC OUT``) one measurement
in this fresh process, as :func:`~wildlife_vision_train.benchmark.inference.run_worker` starts it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .inference import ort_worker, torch_worker
from .training_speed import train_worker

WORKERS = {"ort": ort_worker, "torch": torch_worker, "train": train_worker}


def worker_main(argv: Sequence[str]) -> int:
    """Run the worker the spec file names and write its result as JSON to the output file."""
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING)
    result = WORKERS[spec["worker"]](spec)
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    from wildlife_vision.cli import main as _main

    sys.exit(_main(["benchmark", *sys.argv[1:]]))
