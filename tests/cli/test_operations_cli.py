"""`raydeck` operations and access commands against a real server process (no Ray needed)."""

from __future__ import annotations

import json
import re

from tests.cli.test_cli import assert_one_line_error, raydeck
from tests.ray_fixtures import LiveServer


def test_access_commands_grant_a_project_role(live_server: LiveServer) -> None:
    env = live_server.client_env()
    assert raydeck(env, "projects", "create", "cli-team").returncode == 0
    assert "cli-team" in raydeck(env, "projects", "list").stdout
    assert raydeck(env, "accounts", "create", "carol").returncode == 0
    made = raydeck(env, "roles", "create", "cli-reader", "-p", "clusters.list", "-p", "logs.*")
    assert made.returncode == 0, made.stderr
    bound = raydeck(env, "bindings", "create", "carol", "cli-reader", "--project", "cli-team")
    assert bound.returncode == 0, bound.stderr
    created = raydeck(env, "tokens", "create", "carol-cli", "--account", "carol")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    carol = {**env, "RAYDECK_TOKEN": secret, "RAYDECK_PROJECT": "cli-team"}
    assert raydeck(carol, "clusters", "list").returncode == 0
    assert_one_line_error(raydeck(carol, "billing", "report"), "permission_denied")
    # In another project the same token has no role at all.
    elsewhere = {**carol, "RAYDECK_PROJECT": "default"}
    assert_one_line_error(raydeck(elsewhere, "clusters", "list"), "permission_denied")
    listed = raydeck(env, "accounts", "list")
    assert re.search(r"carol .* cli-reader@cli-team", listed.stdout), listed.stdout
    audit = raydeck(env, "audit", "--action", "role_bindings.")
    assert "role_bindings.create" in audit.stdout and "ok" in audit.stdout
    # Every group's list and delete commands, undoing the above in reverse.
    binding_id = bound.stdout.strip().rsplit("(", 1)[-1].rstrip(")")
    assert binding_id in raydeck(env, "bindings", "list", "--project", "cli-team").stdout
    assert "clusters.list logs.*" in raydeck(env, "roles", "list").stdout
    for command, said in [
        (("bindings", "delete", binding_id), f"binding {binding_id} removed"),
        (("roles", "delete", "cli-reader"), "role cli-reader deleted"),
        (("accounts", "delete", "carol"), "account carol and its tokens deleted"),
        (("projects", "delete", "cli-team"), "project cli-team deleted"),
    ]:
        done = raydeck(env, *command)
        assert said in done.stdout, done.stderr
    assert "cli-team" not in raydeck(env, "projects", "list").stdout


def test_billing_logs_and_top(live_server: LiveServer) -> None:
    env = live_server.client_env()
    report = raydeck(env, "billing", "report", "--by", "cluster", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["by"] == "cluster"
    for by, header in [("project", "project"), ("cluster", "cluster ┃ id ┃ project")]:
        table = raydeck(env, "billing", "report", "--by", by)
        head = next(line for line in table.stdout.splitlines() if "amount" in line)
        assert head.count("project") == 1 and header in head, head  # no column twice
    assert raydeck(env, "projects", "create", "cli-budget").returncode == 0
    budget = raydeck(env, "billing", "budget", "cli-budget", "--alert", "5", "--limit", "10")
    assert budget.returncode == 0, budget.stderr
    assert "limit 10.0" in budget.stdout
    assert_one_line_error(
        raydeck(env, "billing", "budget", "cli-budget", "--alert", "20", "--limit", "10"),
        "alert_amount",
    )
    assert raydeck(env, "logs", "cluster/nothing-here").returncode == 0
    assert_one_line_error(raydeck(env, "logs", "planet/x"), "invalid_argument", "resource")
    summary = raydeck(env, "top", "--once")
    assert summary.returncode == 0, summary.stderr
    assert "clusters" in summary.stdout and "cost so far" in summary.stdout
