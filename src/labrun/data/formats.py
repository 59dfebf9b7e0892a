"""Readers for the on-disk formats of text-classification data, chosen by config.

Files are read as bytes, split on `\\n` only (some corpora hold 0x85, which `str.splitlines`
treats as a line break) and decoded with an explicit codec. A line that does not fit its
format is an error naming the file and line number: never dropped, never merged.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from labrun.errors import DataError

Row = tuple[int, str, str]  # (line number, label, text)


def normalise_bytes(path: Path, raw: bytes) -> tuple[bytes, dict[str, int]]:
    """A file's bytes as the readers expect them: a UTF-8 byte-order mark removed (else it
    would become part of the first label), CR LF made LF; UTF-16 refused in one line (its
    bytes cannot be split on b"\\n"). Returns the counts of what was changed."""
    counts = {"boms_stripped": 0, "crs_removed": 0}
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
        counts["boms_stripped"] = 1
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(raw):
        raise DataError(
            f"{path} is UTF-16; labrun reads UTF-8 and other 8-bit encodings: convert it "
            f"(iconv -f UTF-16 -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix})"
        )
    counts["crs_removed"] = raw.count(b"\r\n")
    if counts["crs_removed"]:
        raw = raw.replace(b"\r\n", b"\n")
    return raw, counts


def _looks_utf16(raw: bytes) -> bool:
    """Without a BOM: most of the even or the odd bytes of the start are NUL (ASCII text)."""
    head = raw[:512]
    if len(head) < 8:
        return False
    return max(head[0::2].count(0), head[1::2].count(0)) > len(head) // 4


def read_lines(path: Path, raw: bytes, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line without its line end); a final empty line is skipped."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        try:
            yield number, raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{number}: cannot decode as {encoding} ({exc.reason} at byte "
                f"{exc.start}); set data.encoding to the file's encoding"
            ) from None


def _malformed(path: Path, number: int, expected: str, line: str) -> DataError:
    return DataError(f"{path}:{number}: malformed line, expected {expected}, got {line[:60]!r}")


def read_prefixed(path: Path, raw: bytes, encoding: str) -> Iterator[Row]:
    """`<label> <text>` per line (SST `stsa.*`)."""
    return _read_separated(path, raw, encoding, " ", "'<label> <text>'")


def read_tsv(path: Path, raw: bytes, encoding: str) -> Iterator[Row]:
    """`<label>\\t<text>` per line, split on the first tab only (SMS Spam)."""
    return _read_separated(path, raw, encoding, "\t", "'<label>\\t<text>'")


def _read_separated(
    path: Path, raw: bytes, encoding: str, separator: str, expected: str
) -> Iterator[Row]:
    """A label, the first `separator`, the text; an empty line is an empty row."""
    for number, line in read_lines(path, raw, encoding):
        if not line.strip():
            yield number, "", ""
            continue
        label, sep, text = line.partition(separator)
        if not sep or not label:
            raise _malformed(path, number, expected, line)
        yield number, label, text


def read_trec(path: Path, raw: bytes, encoding: str, fine: bool = False) -> Iterator[Row]:
    """`COARSE:fine question` per line (TREC); the label is COARSE unless `fine`."""
    for number, line in read_lines(path, raw, encoding):
        if not line.strip():
            yield number, "", ""
            continue
        label, sep, text = line.partition(" ")
        coarse, colon, fine_label = label.partition(":")
        if not sep or not colon or not coarse or not fine_label:
            raise _malformed(path, number, "'COARSE:fine <question>'", line)
        yield number, (label if fine else coarse), text


def read_csv(
    path: Path,
    raw: bytes,
    encoding: str,
    label_column: int = 0,
    text_columns: tuple[int, ...] = (1,),
) -> Iterator[Row]:
    """Quoted CSV without a header (AG News: class, title, description)."""
    need = max(label_column, *text_columns) + 1
    try:
        decoded = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: cannot decode as {encoding}; set data.encoding") from None
    reader = csv.reader(io.StringIO(decoded, newline=""), strict=True)
    try:
        for fields in reader:
            if not fields:
                yield reader.line_num, "", ""
                continue
            if len(fields) < need:
                raise _malformed(
                    path, reader.line_num, f"at least {need} CSV fields", ",".join(fields)
                )
            yield reader.line_num, fields[label_column], " ".join(fields[i] for i in text_columns)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def read_lines_as(label: str) -> Callable[[Path, bytes, str], Iterator[Row]]:
    """One sentence per line, the label given by the file (MR-style `.pos`/`.neg` files)."""

    def read(path: Path, raw: bytes, encoding: str) -> Iterator[Row]:
        for number, line in read_lines(path, raw, encoding):
            yield number, label, line

    return read


READERS: dict[str, Callable[..., Iterator[Row]]] = {
    "prefixed": read_prefixed,
    "tsv": read_tsv,
    "trec": read_trec,
    "csv": read_csv,
}
