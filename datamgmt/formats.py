"""Export formats, each written as a stream of tables into a binary file-like: JSON, CSV
(a zip of one file a table), XML, Parquet (a zip of one file a table, typed columns) and
SQL (INSERTs that load into an empty Chatter schema)."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math
import re
import uuid
import zipfile
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from datamgmt.scopes import Column

ROW_GROUP = 5000
EXTENSIONS = {"json": "json", "csv": "zip", "xml": "xml", "parquet": "zip", "sql": "sql"}


def plain(value: Any, kind: str) -> Any:
    """A JSON-ready value: numbers and booleans as they are, the rest as text or lists."""
    if value is None:
        return None
    if kind == "json":
        return value
    if kind == "vector":
        return [float(x) for x in value]
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind in ("datetime", "date"):
        return value.isoformat()
    if kind == "duration":
        return value.total_seconds()
    if kind in ("decimal", "uuid"):
        return str(value)
    if kind == "float" and not math.isfinite(value):
        return str(value)
    return value


def text(value: Any, kind: str) -> str:
    """A value as one string (CSV, XML): JSON for structured ones."""
    value = plain(value, kind)
    if value is None:
        return ""
    if kind in ("json", "vector"):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class JsonWriter:
    def __init__(self, out: Any, meta: dict[str, Any]) -> None:
        self.out = out
        self.first_table = True
        head = json.dumps(meta, ensure_ascii=False)[:-1]
        self.out.write((head + ', "tables": {').encode())

    def begin(self, name: str, columns: list[Column]) -> None:
        self.columns = columns
        self.first_row = True
        self.out.write(((", " if not self.first_table else "") + json.dumps(name) + ": [").encode())
        self.first_table = False

    def row(self, values: tuple[Any, ...]) -> None:
        record = {c.name: plain(v, c.kind) for c, v in zip(self.columns, values, strict=True)}
        self.out.write(
            (
                (",\n" if not self.first_row else "\n") + json.dumps(record, ensure_ascii=False)
            ).encode()
        )
        self.first_row = False

    def end(self) -> None:
        self.out.write(b"]")

    def close(self) -> None:
        self.out.write(b"}}\n")


class CsvWriter:
    def __init__(self, out: Any, meta: dict[str, Any], *, deflate: bool = True) -> None:
        self.zip = zipfile.ZipFile(
            out, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        )
        with self.zip.open("export.json", "w") as handle:
            handle.write(json.dumps(meta, indent=2).encode())

    def begin(self, name: str, columns: list[Column]) -> None:
        self.columns = columns
        self.handle = self.zip.open(f"{name}.csv", "w", force_zip64=True)
        self.text = io.TextIOWrapper(self.handle, encoding="utf-8", newline="")
        self.csv = csv.writer(self.text)
        self.csv.writerow([c.name for c in columns])

    def row(self, values: tuple[Any, ...]) -> None:
        self.csv.writerow([text(v, c.kind) for c, v in zip(self.columns, values, strict=True)])

    def end(self) -> None:
        self.text.flush()
        self.text.detach()
        self.handle.close()

    def close(self) -> None:
        self.zip.close()


_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class XmlWriter:
    """``<export><table name=".."><row><field name="..">text</field>...``; a value XML 1.0
    cannot hold (control characters) is written base64 with ``encoding="base64"``, null as
    ``null="true"``."""

    def __init__(self, out: Any, meta: dict[str, Any]) -> None:
        self.out = out
        attrs = " ".join(
            f"{k}={quoteattr(str(v))}" for k, v in meta.items() if not isinstance(v, dict | list)
        )
        self.out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<export {attrs}>\n'.encode())

    def begin(self, name: str, columns: list[Column]) -> None:
        self.columns = columns
        self.out.write(f"<table name={quoteattr(name)}>\n".encode())

    def row(self, values: tuple[Any, ...]) -> None:
        parts = ["<row>"]
        for column, value in zip(self.columns, values, strict=True):
            name = quoteattr(column.name)
            if value is None:
                parts.append(f'<field name={name} null="true"/>')
                continue
            content = text(value, column.kind)
            if _XML_BAD.search(content):
                encoded = base64.b64encode(content.encode()).decode()
                parts.append(f'<field name={name} encoding="base64">{encoded}</field>')
            else:
                parts.append(f"<field name={name}>{escape(content)}</field>")
        parts.append("</row>\n")
        self.out.write("".join(parts).encode())

    def end(self) -> None:
        self.out.write(b"</table>\n")

    def close(self) -> None:
        self.out.write(b"</export>\n")


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string(),
        "datetime": pa.timestamp("us", tz="UTC"), "date": pa.date32(),
        "decimal": pa.decimal128(38, 10), "uuid": pa.string(), "json": pa.string(),
        "bytes": pa.binary(), "vector": pa.list_(pa.float32()), "duration": pa.duration("us"),
    }[kind]  # fmt: skip


def _arrow_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if kind == "uuid":
        return str(value)
    if kind == "vector":
        return [float(x) for x in value]
    if kind == "bytes":
        return bytes(value)
    if kind == "decimal":
        return decimal.Decimal(value).quantize(decimal.Decimal("1e-10"))
    return value


class _Sink:
    """What pyarrow writes to: a zip member, with the position it asks for."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self.handle.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class ParquetWriter:
    def __init__(self, out: Any, meta: dict[str, Any], *, codec: str = "none") -> None:
        self.zip = zipfile.ZipFile(out, "w", zipfile.ZIP_STORED)
        self.codec = codec
        with self.zip.open("export.json", "w") as handle:
            handle.write(json.dumps(meta, indent=2).encode())

    def begin(self, name: str, columns: list[Column]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.columns = columns
        self.schema = pa.schema(
            [pa.field(c.name, _arrow_type(c.kind), nullable=True) for c in columns]
        )
        self.handle = self.zip.open(f"{name}.parquet", "w", force_zip64=True)
        self.sink = _Sink(self.handle)
        self.writer = pq.ParquetWriter(
            pa.PythonFile(self.sink, mode="w"), self.schema, compression=self.codec
        )
        self.batch: list[list[Any]] = [[] for _ in columns]

    def _flush(self) -> None:
        import pyarrow as pa

        if self.batch and self.batch[0]:
            arrays = [
                pa.array(values, type=f.type)
                for values, f in zip(self.batch, self.schema, strict=True)
            ]
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self.batch = [[] for _ in self.columns]

    def row(self, values: tuple[Any, ...]) -> None:
        for index, (column, value) in enumerate(zip(self.columns, values, strict=True)):
            self.batch[index].append(_arrow_value(value, column.kind))
        if len(self.batch[0]) >= ROW_GROUP:
            self._flush()

    def end(self) -> None:
        self._flush()
        self.writer.close()
        self.handle.close()

    def close(self) -> None:
        self.zip.close()


def sql_literal(value: Any, kind: str) -> str:
    if value is None:
        return "NULL"
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    if kind == "float":
        return repr(float(value)) if math.isfinite(value) else f"'{value}'"
    if kind == "bytes":
        return "'\\x" + bytes(value).hex() + "'"
    if kind == "vector":
        content = "[" + ",".join(repr(float(x)) for x in value) + "]"
    elif kind == "json":
        content = json.dumps(value, ensure_ascii=False)
    elif kind == "duration":
        content = f"{value.total_seconds()} seconds"
    elif isinstance(value, dt.datetime | dt.date):
        content = value.isoformat()
    elif isinstance(value, uuid.UUID | decimal.Decimal):
        content = str(value)
    else:
        content = str(value)
    return "'" + content.replace("'", "''") + "'"


class SqlWriter:
    """One transaction of multi-row INSERTs; foreign keys checked at COMMIT (Chatter's are
    deferrable), so tables may come in any order."""

    ROWS_PER_INSERT = 200

    def __init__(self, out: Any, meta: dict[str, Any]) -> None:
        self.out = out
        self.sequences: list[str] = []
        comment = json.dumps(meta, ensure_ascii=False).replace("\n", " ")
        self.out.write(
            (
                f"-- Chatter export {comment}\n"
                "SET standard_conforming_strings = on;\nSET client_encoding = 'UTF8';\n"
                "BEGIN;\nSET CONSTRAINTS ALL DEFERRED;\n"
            ).encode()
        )

    def begin(self, name: str, columns: list[Column]) -> None:
        self.columns = columns
        self.prefix = (
            f'INSERT INTO "{name}" (' + ", ".join(f'"{c.name}"' for c in columns) + ") VALUES\n"
        )
        self.pending: list[str] = []

    def _flush(self) -> None:
        if self.pending:
            self.out.write((self.prefix + ",\n".join(self.pending) + ";\n").encode())
            self.pending = []

    def row(self, values: tuple[Any, ...]) -> None:
        literals = ", ".join(
            sql_literal(v, c.kind) for c, v in zip(self.columns, values, strict=True)
        )
        self.pending.append(f"({literals})")
        if len(self.pending) >= self.ROWS_PER_INSERT:
            self._flush()

    def end(self) -> None:
        self._flush()

    def close(self) -> None:
        self.out.write(("\n".join(self.sequences) + "\nCOMMIT;\n").encode())


def writer_for(fmt: str, out: Any, meta: dict[str, Any], *, compression: str) -> Any:
    if fmt == "json":
        return JsonWriter(out, meta)
    if fmt == "csv":
        # An outer gzip/zstd does the compressing; without one, the zip deflates.
        return CsvWriter(out, meta, deflate=compression == "none")
    if fmt == "xml":
        return XmlWriter(out, meta)
    if fmt == "parquet":
        return ParquetWriter(out, meta, codec=compression)
    if fmt == "sql":
        return SqlWriter(out, meta)
    raise ValueError(fmt)
