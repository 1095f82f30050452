"""The Python types the library accepts as one photo, and how inputs are named in results and errors."""

from __future__ import annotations

import io
import os
from typing import Any, Iterable, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image

#: Python types accepted as one input.
INPUT_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)


def _is_single(x: Any) -> bool:
    return isinstance(x, INPUT_TYPES) or not isinstance(x, Iterable) or isinstance(x, (Mapping, io.IOBase))


def _checked_inputs(x: Any) -> Tuple[bool, List[Any], List[str]]:
    """(one input?, the inputs as a list, their names) for predict/embed/explain; an unsupported Python type is a
    programming error, raised as TypeError naming the type (and position) before anything runs."""
    single = _is_single(x)
    items = [x] if single else list(x)
    for i, item in enumerate(items):
        if not isinstance(item, INPUT_TYPES):
            raise TypeError(_unsupported(item, "" if single else f" at position {i}"))
    return single, items, [_input_name(item, None if single else i) for i, item in enumerate(items)]


def _input_name(item: Any, index: Optional[int] = None) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fsdecode(item) if not isinstance(item, str) else item
    at = "" if index is None else f" #{index}"
    if isinstance(item, np.ndarray):
        return f"<ndarray {'x'.join(map(str, item.shape))}{at}>"
    if isinstance(item, Image.Image):
        return f"<PIL.Image {item.mode} {item.size[0]}x{item.size[1]}{at}>"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes {len(item)}{at}>"
    return f"<{type(item).__name__}{at}>"


def _unsupported(item: Any, where: str = "") -> str:
    return (f"unsupported input type {type(item).__name__}{where}: pass a path, bytes, a PIL.Image.Image or an "
            "HxWx3 uint8 numpy array")
