"""wildlife_vision_train.runtime.keep_freed_memory: freed large blocks are reused instead of page-faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "on":
    from wildlife_vision_train.runtime import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
a = np.ones(8 << 20); del a  # the first 64 MiB block faults in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.ones(8 << 20)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="mallopt tuning applies to glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    off, on = _faults("off"), _faults("on")
    # glibc's default returns each 64 MiB block to the OS on free, so every allocation faults its pages in again
    assert off > 2000, off
    assert on < off / 10, (on, off)


def test_train_turns_it_on_for_cpu_by_default_and_the_flag_turns_it_off():
    import argparse

    from wildlife_vision_train.cli import add_train_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    base = ["--data", "m.csv", "--output", "runs/x"]
    assert config_from_args(p.parse_args(base)).run.keep_freed_memory is None  # None = on for CPU
    cfg = config_from_args(p.parse_args(base + ["--no-keep-freed-memory"]))
    assert cfg.run.keep_freed_memory is False
    # a speed setting: it does not change the config hash that identifies the trained weights
    assert cfg.sha256() == config_from_args(p.parse_args(base)).sha256()
