"""The embedded engine: one in-process DuckDB connection per job, with small helpers.

Every statement is run to completion (DuckDB 2's Python API keeps a result open otherwise).
"""

from __future__ import annotations

import os
from typing import Any

import duckdb


def ident(name: str) -> str:
    """Quote an identifier for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: Any) -> str:
    """A SQL literal for a Python str/int/float/bool/None."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Engine:
    """A DuckDB connection with memory and thread settings suited to a laptop."""

    def __init__(self, threads: int | None = None, memory_limit: str | None = None,
                 temp_dir: str | None = None):
        # insertion order is relied on: a fresh table's rowid is its source line index
        config: dict[str, Any] = {"threads": threads or os.cpu_count() or 1, "preserve_insertion_order": True}
        if memory_limit:
            config["memory_limit"] = memory_limit
        self.con = duckdb.connect(config=config)
        if temp_dir:
            self.run(f"SET temp_directory = {lit(temp_dir)}")
        self._n = 0

    def run(self, sql: str, params: list[Any] | None = None) -> None:
        self.con.execute(sql, params or []).fetchall()

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def one(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows and len(rows[0]) == 1 else (rows[0] if rows else None)

    def columns(self, table: str) -> list[tuple[str, str]]:
        """``[(name, duckdb_type), ...]`` of a table or view."""
        return [(r[0], r[1]) for r in self.rows(f"DESCRIBE {ident(table)}")]

    def fresh(self, prefix: str) -> str:
        """A new unique table name."""
        self._n += 1
        return f"{prefix}_{self._n}"

    def register(self, name: str, data: Any) -> None:
        self.con.register(name, data)

    def close(self) -> None:
        self.con.close()
