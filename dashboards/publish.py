"""``tianyan dashboards publish``: push the data sources and boards to a Grafana through its
HTTP API with grafana-client.

Everything that can fail for a reason the user must fix is found before anything is
written: Grafana is reached (``/api/health``), the token is accepted (``/api/org``) and, where
Grafana tells (``/api/access-control/user/permissions``, Grafana 9+), allowed to write data
sources, folders and dashboards; the existing data sources and folder are read. Only then
are the data sources created or updated (by uid), the folder created if missing, and the
boards saved with ``overwrite``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError

from dashboards.board import TAG, Board
from dashboards.datasources import DATASOURCES

#: What the token must be allowed to do (Grafana's RBAC action names).
REQUIRED_ACTIONS = (
    "datasources:create",
    "datasources:write",
    "folders:create",
    "dashboards:create",
    "dashboards:write",
)
FOLDER_TITLE = "tianyan"


class PublishError(RuntimeError):
    """Publishing stopped before changing anything; the message says what to fix."""


@dataclass
class Published:
    """What ``publish`` changed."""

    datasources_created: list[str] = field(default_factory=list)
    datasources_updated: list[str] = field(default_factory=list)
    folder_created: bool = False
    boards: list[str] = field(default_factory=list)  # their URLs in Grafana


def _status(e: GrafanaException) -> int:
    return int(getattr(e, "status_code", 0) or 0)


def _refused(url: str, e: GrafanaException, doing: str) -> PublishError:
    detail = e.response.get("message") if isinstance(e.response, dict) else e.response
    return PublishError(
        f"Grafana at {url} refused the token ({_status(e)} {detail or e.message}) when "
        f"{doing}; nothing was changed. Give a service-account token with the Admin role."
    )


def _get(api: GrafanaApi, url: str, path: str, doing: str) -> Any:
    """GET ``path``; None when Grafana answers 404; a refused token raised as such."""
    try:
        return api.client.GET(path)
    except GrafanaClientError as e:
        if _status(e) == 404:
            return None
        if _status(e) in (401, 403):
            raise _refused(url, e, doing) from e
        raise PublishError(
            f"Grafana at {url} answered {e.message} when {doing}; nothing was changed"
        ) from e
    except (GrafanaException, niquests.exceptions.RequestException) as e:
        raise PublishError(
            f"Grafana at {url} failed when {doing} ({e}); nothing was changed"
        ) from e


def _reach(api: GrafanaApi, url: str) -> None:
    try:
        health = api.client.GET("/health")
    except (niquests.exceptions.RequestException, GrafanaTimeoutError) as e:
        raise PublishError(f"could not reach Grafana at {url}: {e}; nothing was changed") from e
    except GrafanaException as e:
        if _status(e) == 0:
            raise PublishError(f"could not reach Grafana at {url}: {e}; nothing was changed") from e
        raise PublishError(
            f"{url} answered {e.message} on /api/health: is it Grafana's address? "
            "Nothing was changed."
        ) from e
    if not isinstance(health, dict) or "database" not in health:
        raise PublishError(
            f"{url} answered /api/health but not as Grafana does: is it Grafana's address? "
            "Nothing was changed."
        )


def publish(
    url: str,
    token: str,
    boards: Sequence[Board],
    database_url: str,
    *,
    sslmode: str = "disable",
    scoped_roles: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> Published:
    """Publish the data sources (for the database at ``database_url``, connecting with
    ``sslmode`` unless the URL names one) and ``boards``. A scoped source connects as
    ``scoped_roles[its scope]`` (the organisation's unit or company login role, by
    ``user_unit`` / ``maintenance_company``), else as ``tianyan_analyst``."""
    if not token:
        raise PublishError("no token given: create a Grafana service-account token (Admin)")
    try:
        payloads = {
            s.uid: s.api_payload(
                database_url, sslmode, (scoped_roles or {}).get(s.scope) if s.scope else None
            )
            for s in DATASOURCES
        }
    except ValueError as e:
        raise PublishError(f"--database-url: {e}; nothing was changed") from e
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    _reach(api, url)
    _get(api, url, "/org", "checking the token (GET /api/org)")
    permissions = _get(
        api, url, "/access-control/user/permissions", "reading the token's permissions"
    )
    if isinstance(permissions, dict):
        missing = [a for a in REQUIRED_ACTIONS if a not in permissions]
        if missing:
            raise PublishError(
                f"Grafana at {url} accepted the token but it may not {', '.join(missing)}; "
                "nothing was changed. Give a service-account token with the Admin role."
            )
    existing = {
        s.uid: _get(api, url, f"/datasources/uid/{s.uid}", f"reading data source {s.uid}")
        for s in DATASOURCES
    }
    folder = _get(api, url, f"/folders/{TAG}", f"reading folder {TAG}")

    done = Published()
    try:
        for uid, payload in payloads.items():
            if existing[uid] is None:
                api.datasource.create_datasource(payload)
                done.datasources_created.append(uid)
            else:
                api.datasource.update_datasource_by_uid(uid, payload)
                done.datasources_updated.append(uid)
        if folder is None:
            api.folder.create_folder(FOLDER_TITLE, uid=TAG)
            done.folder_created = True
        for board in boards:
            dashboard = board.to_json()
            dashboard.pop("id", None)
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": dashboard,
                    "folderUid": TAG,
                    "overwrite": True,
                    "message": "tianyan dashboards publish",
                }
            )
            done.boards.append(
                str(answer.get("url", board.uid)) if isinstance(answer, dict) else board.uid
            )
    except GrafanaException as e:
        raise PublishError(
            f"Grafana at {url} refused a write ({e.message}) after publishing "
            f"{len(done.datasources_created) + len(done.datasources_updated)} data sources and "
            f"{len(done.boards)} boards; run publish again once fixed"
        ) from e
    return done
