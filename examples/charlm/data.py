"""Text both scripts share: the Python standard library's own source, read as UTF-8 bytes (256 symbols).

train.py reads TRAIN_FILES only; eval.py reads HELDOUT_FILES only, which are different modules. The numbers
depend on the Python version (its stdlib text), so compare runs made with the same interpreter.
"""
import sysconfig
from pathlib import Path

VOCAB = 256  # bytes; the stdlib source is almost all ASCII, so a byte is a character
TRAIN_FILES = sorted(["argparse.py", "ast.py", "configparser.py", "dataclasses.py", "difflib.py", "enum.py",
                      "functools.py", "inspect.py", "shutil.py", "typing.py"])
HELDOUT_FILES = sorted(["calendar.py", "contextlib.py", "csv.py", "fractions.py", "heapq.py", "pprint.py",
                        "random.py", "statistics.py", "tempfile.py", "textwrap.py"])
HELDOUT_SPANS, HELDOUT_SPAN_LEN = 16, 4096  # 65,536 scored characters at fixed, evenly spaced places


def read(names) -> bytes:
    root = Path(sysconfig.get_paths()["stdlib"])
    return b"\n".join((root / n).read_bytes() for n in names)


def spans(text: bytes, count: int, length: int) -> list[bytes]:
    """`count` pieces of `length + 1` bytes at evenly spaced, fixed offsets (the first byte is context only)."""
    step = (len(text) - length - 1) // max(count - 1, 1)
    return [text[i * step:i * step + length + 1] for i in range(count)]


def train_text() -> bytes:
    return read(TRAIN_FILES)


def heldout_spans() -> list[bytes]:
    return spans(read(HELDOUT_FILES), HELDOUT_SPANS, HELDOUT_SPAN_LEN)
