"""Which files a `predict` run reads: PATH arguments expanded into a deterministic, duplicate-free list.

See "Which files are read" in docs/predict.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Set, Tuple

from .preprocess import IMAGE_EXTENSIONS


@dataclass
class Inputs:
    """The inputs of a run, in order, plus what was left out and why."""

    paths: List[str] = field(default_factory=list)
    #: inputs that get an error row without being decoded (e.g. a folder that cannot be listed)
    problems: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    skipped_non_images: int = 0
    skipped_subfolders: int = 0
    skipped_loops: int = 0
    duplicates: int = 0


def expand_inputs(args_paths: Sequence[str], recursive: bool = False) -> Inputs:
    """Expand PATH arguments into a deterministic, duplicate-free list of inputs.

    Files named explicitly are included whatever their extension (a renamed non-image gets its error row);
    folders contribute their image files (by extension) sorted by path, subfolders only with ``recursive``.
    Symlinked folders are followed once: each real folder is visited at most once, so loops end. Missing
    paths are kept as inputs (their row says "file not found"). No globbing: the shell does that.
    """
    res = Inputs()
    seen: Set[str] = set()

    def add(path: str) -> None:
        if path in seen:
            res.duplicates += 1
            return
        seen.add(path)
        res.paths.append(path)

    for arg in args_paths:
        if os.path.isdir(arg):
            for path in _walk(arg, recursive, res):
                add(path)
        else:
            add(arg)
    return res


def _walk(root: str, recursive: bool, res: Inputs) -> List[str]:
    visited: Set[Tuple[int, int]] = set()
    found: List[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
        except OSError as e:
            res.problems[folder] = (f"cannot access folder: {e.strerror or e}", "unreadable")
            found.append(folder)
            continue
        if key in visited:
            res.skipped_loops += 1
            continue
        visited.add(key)
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            res.problems[folder] = (f"cannot list folder: {e.strerror or e}", "unreadable")
            found.append(folder)
            continue
        for entry in entries:
            path = os.path.join(folder, entry.name)
            try:
                is_dir = entry.is_dir()  # follows symlinks; False for broken links and loops
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    stack.append(path)
                else:
                    res.skipped_subfolders += 1
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(path)
            else:
                res.skipped_non_images += 1
    found.sort(key=lambda p: os.path.relpath(p, root).split(os.sep))
    return found


__all__ = ["Inputs", "expand_inputs"]
