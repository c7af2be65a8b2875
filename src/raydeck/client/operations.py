"""SDK for operations and access: logs, metrics, billing and budgets, projects, accounts,
roles, role bindings and the audit log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from raydeck.client.http import ApiTransport
from raydeck.core.models.access import (
    Account,
    AccountCreate,
    AuditEntry,
    CustomRole,
    CustomRoleCreate,
    Project,
    ProjectCreate,
    RoleBinding,
    RoleBindingCreate,
)
from raydeck.core.models.common import Page
from raydeck.core.models.operations import (
    BillingReport,
    Budget,
    BudgetUpdate,
    LogEntry,
)

__all__ = ["AccessApi", "BillingApi", "LogApi", "MetricsApi"]


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class LogApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def query(
        self,
        resource: str | None = None,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        severity: str | None = None,
        text: str | None = None,
        after: int | None = None,
        page_size: int = 100,
        all_projects: bool = False,
        newest: bool = False,
    ) -> Page[LogEntry]:
        """``resource`` is ``<kind>/<name or id>`` (cluster, job, endpoint, …) or a kind.
        Oldest first from ``after``; with ``newest`` the last ``page_size`` records (``tail``),
        in time order."""
        data = self._api.request(
            "GET",
            "/api/v1/logs",
            params={
                "resource": resource,
                "since": _iso(since),
                "until": _iso(until),
                "severity": severity,
                "text": text,
                "after": after,
                "page_size": page_size,
                "all_projects": all_projects or None,
                "newest": newest or None,
            },
        )
        return Page[LogEntry].model_validate(data)

    def follow(
        self,
        resource: str | None = None,
        *,
        poll: float = 1.0,
        stop_when: Callable[[], bool] | None = None,
        **filters: Any,
    ) -> Iterator[LogEntry]:
        """Every matching record, then new ones as they are collected, until ``stop_when()``
        is true after a poll that found nothing new (``filters`` as for ``query``)."""
        after: int | None = filters.pop("after", None)
        while True:
            page = self.query(resource, after=after, page_size=1000, **filters)
            yield from page.items
            if page.items:
                after = page.items[-1].id
            if page.next_page_token:
                continue
            if stop_when is not None and stop_when():
                return
            time.sleep(poll)


class MetricsApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def text(self) -> str:
        """The control plane's Prometheus exposition."""
        return str(self._api.request("GET", "/metrics"))


class BillingApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def report(
        self,
        by: str = "project",
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        all_projects: bool = False,
    ) -> BillingReport:
        data = self._api.request(
            "GET",
            "/api/v1/billing/report",
            params={
                "by": by,
                "since": _iso(since),
                "until": _iso(until),
                "all_projects": all_projects or None,
            },
        )
        return BillingReport.model_validate(data)

    def get_budget(self, project: str) -> Budget:
        return Budget.model_validate(self._api.request("GET", f"/api/v1/projects/{project}/budget"))

    def set_budget(self, project: str, request: BudgetUpdate) -> Budget:
        data = self._api.request(
            "PUT",
            f"/api/v1/projects/{project}/budget",
            json=request.model_dump(mode="json", exclude_none=True),
        )
        return Budget.model_validate(data)

    def delete_budget(self, project: str) -> Budget:
        return Budget.model_validate(
            self._api.request("DELETE", f"/api/v1/projects/{project}/budget")
        )


class AccessApi:
    def __init__(self, api: ApiTransport) -> None:
        self._api = api

    def create_project(self, name: str, description: str | None = None) -> Project:
        body = ProjectCreate(name=name, description=description).model_dump(exclude_none=True)
        return Project.model_validate(self._api.request("POST", "/api/v1/projects", json=body))

    def projects(self) -> Page[Project]:
        return Page[Project].model_validate(self._api.request("GET", "/api/v1/projects"))

    def delete_project(self, name: str) -> Project:
        return Project.model_validate(self._api.request("DELETE", f"/api/v1/projects/{name}"))

    def create_account(
        self, name: str, *, kind: str = "user", display_name: str | None = None
    ) -> Account:
        request = AccountCreate.model_validate(
            {"name": name, "kind": kind, "display_name": display_name}
        )
        data = self._api.request(
            "POST", "/api/v1/accounts", json=request.model_dump(mode="json", exclude_none=True)
        )
        return Account.model_validate(data)

    def accounts(self, *, page_size: int = 100, page_token: str | None = None) -> Page[Account]:
        data = self._api.request(
            "GET", "/api/v1/accounts", params={"page_size": page_size, "page_token": page_token}
        )
        return Page[Account].model_validate(data)

    def delete_account(self, name: str) -> Account:
        return Account.model_validate(self._api.request("DELETE", f"/api/v1/accounts/{name}"))

    def bind(self, account: str, role: str, project: str = "default") -> RoleBinding:
        body = RoleBindingCreate(account=account, role=role, project=project).model_dump()
        return RoleBinding.model_validate(
            self._api.request("POST", "/api/v1/roleBindings", json=body)
        )

    def bindings(self, project: str | None = None) -> Page[RoleBinding]:
        data = self._api.request("GET", "/api/v1/roleBindings", params={"in_project": project})
        return Page[RoleBinding].model_validate(data)

    def unbind(self, binding_id: str) -> RoleBinding:
        data = self._api.request("DELETE", f"/api/v1/roleBindings/{binding_id}")
        return RoleBinding.model_validate(data)

    def create_role(
        self, name: str, permissions: list[str], description: str | None = None
    ) -> CustomRole:
        request = CustomRoleCreate(name=name, permissions=permissions, description=description)
        data = self._api.request(
            "POST", "/api/v1/roles", json=request.model_dump(exclude_none=True)
        )
        return CustomRole.model_validate(data)

    def roles(self) -> Page[CustomRole]:
        return Page[CustomRole].model_validate(self._api.request("GET", "/api/v1/roles"))

    def delete_role(self, name: str) -> CustomRole:
        return CustomRole.model_validate(self._api.request("DELETE", f"/api/v1/roles/{name}"))

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        project: str | None = None,
        since: datetime | str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[AuditEntry]:
        data = self._api.request(
            "GET",
            "/api/v1/audit",
            params={
                "actor": actor,
                "action": action,
                "in_project": project,
                "since": _iso(since),
                "page_size": page_size,
                "page_token": page_token,
            },
        )
        return Page[AuditEntry].model_validate(data)
