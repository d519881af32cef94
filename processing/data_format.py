"""The one record shape every training stage is converted to, and the reading/validation helpers.

Each stage's loader (`localized_narratives`, `trajectory_data`, `instruction_data`) reads its own
public format, validates it and converts every item to a *training record*:

    {"id": str, "video": str (absolute path), "media": "video" | "image",
     "conversations": [{"from": "human" | "gpt", "value": str}, ...],
     "points":       [{"turn": int, "char_span": [begin, end], "point": [x, y]}],            # stage 1
     "trajectories": [{"turn": int, "char_span": [begin, end], "trajectory": [P][N][2]}]}  # stage 2

`turn` indexes `conversations` and `char_span` points into that turn's `value`: the collator puts the
coordinates on exactly the tokens of those characters. Keeping one shape lets one collator serve all
three stages and lets `datasets` store them with fixed features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value
from datasets.exceptions import DatasetGenerationError

__all__ = [
    "TRAINING_FEATURES",
    "DataFormatError",
    "RecordValidator",
    "build_dataset",
    "read_records",
    "resolve_media_path",
]

TRAINING_FEATURES = Features(
    {
        "id": Value("string"),
        "video": Value("string"),
        "media": Value("string"),
        "conversations": List({"from": Value("string"), "value": Value("string")}),
        "points": List({"turn": Value("int32"), "char_span": List(Value("int32")), "point": List(Value("float32"))}),
        "trajectories": List(
            {
                "turn": Value("int32"),
                "char_span": List(Value("int32")),
                "trajectory": List(List(List(Value("float32")))),
            }
        ),
    }
)


class DataFormatError(ValueError):
    """A dataset item that does not follow its format; the message names file, record and field."""

    def __init__(self, path: str | Path, record: int | str | None, field: str | None, problem: str):
        self.path, self.record, self.field, self.problem = str(path), record, field, problem
        where = [str(path)]
        if record is not None:
            where.append(f"record {record}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {problem}")


class RecordValidator:
    """Typed access to one raw record that raises `DataFormatError` pointing at the offending field."""

    def __init__(self, path: str | Path, index: int, record: Any, id_field: str | None = None):
        self.path = path
        self.index = index
        self.record = record
        ident = record.get(id_field) if id_field and isinstance(record, dict) else None
        self.label: int | str = f"{index} ({id_field}={ident!r})" if ident is not None else index
        if not isinstance(record, dict):
            self.fail(None, f"expected a JSON object, got {type(record).__name__}")

    def fail(self, field: str | None, problem: str):
        raise DataFormatError(self.path, self.label, field, problem)

    def get(self, field: str, kind: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        """`record[field]` (dotted paths and `name[3]` allowed) checked against `kind`."""
        value: Any = self.record
        for part in field.replace("]", "").replace("[", ".").split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                if required:
                    self.fail(field, "missing")
                return default
        if value is None and not required:
            return default
        return self.check(field, value, kind)

    def check(self, field: str, value: Any, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:  # JSON numbers: ints are fine where floats are expected, bools are not
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(field, f"expected a number, got {value!r}")
            if not math.isfinite(value):
                self.fail(field, f"expected a finite number, got {value!r}")
            return float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(field, f"expected {names}, got {type(value).__name__} {_short(value)}")
        return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield `(index, record)` from a JSON list/dict, JSON Lines or Parquet file, streaming where possible.

    A JSON dict keyed by id (ActivityNet style) yields its values with the key stored as `"id"` when
    absent. Malformed JSON names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        index = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for record in batch.to_pylist():
                yield index, record
                index += 1
        return
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            index = 0
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFormatError(
                        path, index, None, f"line {line_number} is not valid JSON ({error})"
                    ) from None
                yield index, record
                index += 1
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataFormatError(path, None, None, f"not valid JSON ({error})") from None
        if isinstance(data, dict):
            data = [
                {"id": key, **value} if isinstance(value, dict) and "id" not in value else value
                for key, value in data.items()
            ]
        if not isinstance(data, list):
            raise DataFormatError(path, None, None, f"expected a JSON list of records, got {type(data).__name__}")
        yield from enumerate(data)
        return
    raise DataFormatError(path, None, None, f"unsupported file type {suffix!r} (use .json, .jsonl or .parquet)")


def resolve_media_path(path: str, dataset_file: str | Path, media_folder: str | Path | None = None) -> str:
    """Absolute paths stay; relative ones are taken from `media_folder`, else from the dataset file's folder."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    base = Path(media_folder) if media_folder is not None else Path(dataset_file).resolve().parent
    return str((base / candidate).resolve())


def build_dataset(records: Callable[..., Iterator[dict]], path: str | Path, **kwargs: Any) -> Dataset:
    """Materialise converted training records as a `datasets.Dataset` with `TRAINING_FEATURES`.

    `records(path=path, **kwargs)` is a generator function; `datasets` writes it to Arrow in batches (so
    a large stage-2 file never sits in memory as Python lists) and caches the result by its arguments,
    which include the file's size and modification time so an edited file is read again. A validation
    error inside the generator comes out as itself, not as `datasets`' generic generation error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, None, "file not found")
    stat = path.stat()
    gen_kwargs = {"path": str(path), **kwargs, "file_signature": (stat.st_size, stat.st_mtime_ns)}
    try:
        return Dataset.from_generator(_drop_signature(records), features=TRAINING_FEATURES, gen_kwargs=gen_kwargs)
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, DataFormatError):
            raise error.__cause__ from None
        raise


def _drop_signature(records: Callable[..., Iterator[dict]]) -> Callable[..., Iterator[dict]]:
    def generate(file_signature: tuple[int, int], **kwargs: Any) -> Iterator[dict]:
        yield from records(**kwargs)

    generate.__qualname__ = f"{records.__module__}.{records.__qualname__}"
    return generate
