"""The Grafana PostgreSQL query, which grafana-foundation-sdk does not model.

:class:`PostgresQuery` is the query model (a ``Dataquery`` variant with ``to_json`` and
``from_json``) and :class:`SQL` its builder; :func:`register` tells the SDK's runtime to decode
targets of PostgreSQL panels into it, so a board's JSON round-trips through the SDK's models
(``Dashboard.from_json``) without losing a field.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

#: Grafana's plugin id of its built-in PostgreSQL data source (Grafana 10.2 and later;
#: ``postgres`` before).
POSTGRES_TYPE = "grafana-postgresql-datasource"

#: Grafana's two result formats of a SQL query: rows as they are, or series needing a
#: ``time`` column and rows sorted by it.
Format = Literal["table", "time_series"]


class PostgresQuery(cogvariants.Dataquery):
    """One SQL target of a panel, as Grafana's PostgreSQL data source stores it."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format: Format = "table",
        datasource: dashboard.DataSourceRef | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "rawSql": self.raw_sql,
            "format": self.format,
            "rawQuery": True,
            "editorMode": "code",
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        datasource = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            # Grafana's own default when a target names no format.
            format=data.get("format", "time_series"),
            datasource=dashboard.DataSourceRef.from_json(datasource) if datasource else None,
        )


class SQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of a :class:`PostgresQuery`: ``SQL("SELECT …").format("time_series")``."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = PostgresQuery(raw_sql=raw_sql)

    def build(self) -> PostgresQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def format(self, format: Format) -> Self:
        self._internal.format = format
        return self

    def datasource(self, datasource: dashboard.DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self


def register() -> None:
    """Decode PostgreSQL targets into :class:`PostgresQuery` (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=POSTGRES_TYPE, from_json_hook=PostgresQuery.from_json)
    )
