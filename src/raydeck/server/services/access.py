"""Projects, accounts, role bindings and custom roles; who may do what where."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from raydeck.core.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from raydeck.core.ids import new_id
from raydeck.core.models import Role
from raydeck.core.models.access import (
    ALL_PROJECTS,
    Account,
    AccountCreate,
    AccountKind,
    CustomRole,
    CustomRoleCreate,
    Project,
    ProjectCreate,
    RoleBinding,
    RoleBindingCreate,
)
from raydeck.core.models.common import Page
from raydeck.db.models import (
    AccountRow,
    BatchPredictionJobRow,
    ClusterRow,
    ConnectionRow,
    CustomRoleRow,
    EndpointRow,
    ModelRow,
    ProjectRow,
    RoleBindingRow,
    TokenRow,
    TrainingJobRow,
    TrainingPipelineRow,
)
from raydeck.server.services.paging import fetch_page
from raydeck.server.services.roles import (
    GLOBAL_RESOURCES,
    SELF_RESOURCES,
    builtin_permissions,
    role_allows,
)

# Tables whose rows belong to a project: a project is deleted only once they are all gone
# (orphans would reappear in a new project of the same name).
_PROJECT_TABLES = (
    ClusterRow,
    EndpointRow,
    ModelRow,
    BatchPredictionJobRow,
    TrainingJobRow,
    TrainingPipelineRow,
    ConnectionRow,
)

__all__ = [
    "account_allows",
    "allowed_everywhere",
    "bind_role",
    "create_account",
    "create_project",
    "create_role",
    "delete_account",
    "delete_project",
    "delete_role",
    "ensure_account",
    "get_account",
    "get_project_row",
    "list_accounts",
    "list_bindings",
    "list_projects",
    "list_roles",
    "projects_allowing",
    "roles_in_project",
    "unbind_role",
]


# --- projects ---------------------------------------------------------------------------


def _project(row: ProjectRow) -> Project:
    return Project(name=row.name, description=row.description, created_at=row.created_at)


def get_project_row(session: Session, name: str) -> ProjectRow:
    row = session.get(ProjectRow, name)
    if row is None:
        raise NotFoundError(f"project {name!r} not found", field="project")
    return row


def create_project(session: Session, request: ProjectCreate) -> Project:
    if session.get(ProjectRow, request.name) is not None:
        raise AlreadyExistsError(f"project {request.name!r} already exists", field="name")
    row = ProjectRow(name=request.name, description=request.description)
    session.add(row)
    session.flush()
    return _project(row)


def list_projects(session: Session) -> Page[Project]:
    rows = session.scalars(select(ProjectRow).order_by(ProjectRow.name))
    return Page[Project](items=[_project(r) for r in rows])


def delete_project(session: Session, name: str) -> Project:
    row = get_project_row(session, name)
    if name == "default":
        raise FailedPreconditionError("the default project cannot be deleted", field="project")
    for table in _PROJECT_TABLES:
        if session.scalar(select(table.id).where(table.project == name).limit(1)):
            raise FailedPreconditionError(
                f"project {name!r} still has {table.__tablename__}; delete them first",
                field="project",
            )
    session.execute(delete(RoleBindingRow).where(RoleBindingRow.project == name))
    session.delete(row)
    return _project(row)


# --- accounts and bindings --------------------------------------------------------------


def _binding(row: RoleBindingRow, account_name: str) -> RoleBinding:
    return RoleBinding(
        id=row.id,
        account=account_name,
        role=row.role,
        project=row.project,
        created_at=row.created_at,
    )


def _account(session: Session, row: AccountRow) -> Account:
    bindings = session.scalars(
        select(RoleBindingRow)
        .where(RoleBindingRow.account_id == row.id)
        .order_by(RoleBindingRow.id)
    )
    return Account(
        id=row.id,
        name=row.name,
        kind=AccountKind(row.kind),
        display_name=row.display_name,
        created_at=row.created_at,
        bindings=[_binding(b, row.name) for b in bindings],
    )


def _account_row(session: Session, name: str, field: str = "account") -> AccountRow:
    row = session.scalar(select(AccountRow).where(AccountRow.name == name))
    if row is None:
        raise NotFoundError(f"account {name!r} not found", field=field)
    return row


def create_account(session: Session, request: AccountCreate) -> Account:
    if session.scalar(select(AccountRow.id).where(AccountRow.name == request.name)):
        raise AlreadyExistsError(f"account {request.name!r} already exists", field="name")
    row = AccountRow(
        id=new_id("acc"),
        name=request.name,
        kind=request.kind.value,
        display_name=request.display_name,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExistsError(f"account {request.name!r} already exists", field="name") from exc
    return _account(session, row)


def ensure_account(session: Session, name: str, kind: AccountKind) -> AccountRow:
    """The account named ``name``, created as ``kind`` when missing."""
    row = session.scalar(select(AccountRow).where(AccountRow.name == name))
    if row is None:
        row = AccountRow(id=new_id("acc"), name=name, kind=kind.value)
        session.add(row)
        session.flush()
    return row


def get_account(session: Session, name: str) -> Account:
    return _account(session, _account_row(session, name))


def list_accounts(session: Session, page_size: int, page_token: str | None) -> Page[Account]:
    rows, next_token = fetch_page(session, select(AccountRow), AccountRow.id, page_size, page_token)
    return Page[Account](items=[_account(session, r) for r in rows], next_page_token=next_token)


def delete_account(session: Session, name: str) -> Account:
    row = _account_row(session, name)
    found = _account(session, row)
    # Its tokens go with it (ON DELETE CASCADE is not enforced on every backend: be explicit).
    session.execute(delete(TokenRow).where(TokenRow.account_id == row.id))
    session.execute(delete(RoleBindingRow).where(RoleBindingRow.account_id == row.id))
    session.delete(row)
    return found


def _check_role_exists(session: Session, role: str) -> None:
    if role in Role.__members__.values() or session.get(CustomRoleRow, role) is not None:
        return
    raise InvalidArgumentError(
        f"unknown role {role!r} (built-in: admin, user, viewer, or a custom role)", field="role"
    )


def bind_role(session: Session, request: RoleBindingCreate) -> RoleBinding:
    account = _account_row(session, request.account)
    _check_role_exists(session, request.role)
    if request.project != ALL_PROJECTS:
        get_project_row(session, request.project)
    existing = session.scalar(
        select(RoleBindingRow).where(
            RoleBindingRow.account_id == account.id,
            RoleBindingRow.project == request.project,
            RoleBindingRow.role == request.role,
        )
    )
    if existing is not None:
        raise AlreadyExistsError(
            f"{request.account!r} already has {request.role!r} in {request.project!r}",
            field="role",
        )
    row = RoleBindingRow(
        id=new_id("rb"), account_id=account.id, project=request.project, role=request.role
    )
    session.add(row)
    session.flush()
    return _binding(row, account.name)


def list_bindings(session: Session, project: str | None) -> Page[RoleBinding]:
    query = select(RoleBindingRow, AccountRow.name).join(
        AccountRow, AccountRow.id == RoleBindingRow.account_id
    )
    if project is not None:
        query = query.where(RoleBindingRow.project == project)
    rows = session.execute(query.order_by(RoleBindingRow.id))
    return Page[RoleBinding](items=[_binding(row, name) for row, name in rows])


def unbind_role(session: Session, binding_id: str) -> RoleBinding:
    row = session.get(RoleBindingRow, binding_id)
    if row is None:
        raise NotFoundError(f"role binding {binding_id!r} not found", field="binding")
    account = session.get(AccountRow, row.account_id)
    found = _binding(row, account.name if account else "?")
    session.delete(row)
    return found


# --- roles ------------------------------------------------------------------------------


def create_role(session: Session, request: CustomRoleCreate) -> CustomRole:
    builtin = request.name in Role.__members__.values()
    if builtin or session.get(CustomRoleRow, request.name) is not None:
        raise AlreadyExistsError(f"role {request.name!r} already exists", field="name")
    row = CustomRoleRow(
        name=request.name,
        permissions=sorted(set(request.permissions)),
        description=request.description,
    )
    session.add(row)
    session.flush()
    return CustomRole(
        name=row.name,
        permissions=row.permissions,
        description=row.description,
        created_at=row.created_at,
    )


def list_roles(session: Session) -> Page[CustomRole]:
    builtins = [
        CustomRole(name=r.value, permissions=builtin_permissions(r), builtin=True) for r in Role
    ]
    custom = [
        CustomRole(
            name=r.name,
            permissions=list(r.permissions),
            description=r.description,
            created_at=r.created_at,
        )
        for r in session.scalars(select(CustomRoleRow).order_by(CustomRoleRow.name))
    ]
    return Page[CustomRole](items=builtins + custom)


def delete_role(session: Session, name: str) -> CustomRole:
    if name in Role.__members__.values():
        raise FailedPreconditionError(f"built-in role {name!r} cannot be deleted", field="role")
    row = session.get(CustomRoleRow, name)
    if row is None:
        raise NotFoundError(f"role {name!r} not found", field="role")
    if session.scalar(select(RoleBindingRow.id).where(RoleBindingRow.role == name).limit(1)):
        raise FailedPreconditionError(
            f"role {name!r} is still bound; remove its bindings first", field="role"
        )
    session.delete(row)
    return CustomRole(name=row.name, permissions=list(row.permissions), created_at=row.created_at)


# --- decisions --------------------------------------------------------------------------


def roles_in_project(session: Session, account_id: str, project: str) -> list[tuple[str, str]]:
    """(role, binding project) pairs that apply in ``project``."""
    rows = session.execute(
        select(RoleBindingRow.role, RoleBindingRow.project).where(
            RoleBindingRow.account_id == account_id,
            RoleBindingRow.project.in_([project, ALL_PROJECTS]),
        )
    )
    return [(role, bound) for role, bound in rows]


def account_allows(session: Session, bindings: list[tuple[str, str]], permission: str) -> bool:
    resource = permission.partition(".")[0]
    if resource in SELF_RESOURCES:
        return True
    for role, bound_project in bindings:
        if resource in GLOBAL_RESOURCES and bound_project != ALL_PROJECTS:
            continue
        custom: list[str] = []
        if role not in Role.__members__.values():
            found = session.get(CustomRoleRow, role)
            custom = list(found.permissions) if found is not None else []
        if role_allows(role, permission, custom):
            return True
    return False


def projects_allowing(
    session: Session, account_name: str | None, permission: str
) -> set[str] | None:
    """The projects where the account's bindings grant ``permission``; None: every project
    (a binding on "*" grants it)."""
    if allowed_everywhere(session, account_name, permission):
        return None
    account = session.scalar(select(AccountRow).where(AccountRow.name == account_name))
    if account is None:
        return set()
    by_project: dict[str, list[tuple[str, str]]] = {}
    for role, bound in session.execute(
        select(RoleBindingRow.role, RoleBindingRow.project).where(
            RoleBindingRow.account_id == account.id, RoleBindingRow.project != ALL_PROJECTS
        )
    ):
        by_project.setdefault(bound, []).append((role, bound))
    return {
        project
        for project, bindings in by_project.items()
        if account_allows(session, bindings, permission)
    }


def allowed_everywhere(session: Session, account_name: str | None, permission: str) -> bool:
    """True when a binding on every project ("*") grants ``permission`` (cross-project views)."""
    account = session.scalar(select(AccountRow).where(AccountRow.name == account_name))
    if account is None:
        return False
    bindings = [
        (role, bound)
        for role, bound in roles_in_project(session, account.id, ALL_PROJECTS)
        if bound == ALL_PROJECTS
    ]
    return account_allows(session, bindings, permission)
