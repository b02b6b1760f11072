"""icefall-style logging: ``2026-11-24 05:45:22,123 INFO [train.py:123] message``."""

import logging
import sys
from pathlib import Path
from typing import Optional, Union

LOG_FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logger(log_file: Optional[Union[str, Path]] = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when ``log_file`` is given, to that file too (its folder is created)."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
