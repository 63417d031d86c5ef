"""The CI templates `fabric init` writes, run for real (issue 11, "What it must show").

Each template is parsed as YAML and its fabric commands are extracted the way the templates
mark them: on GitHub, the steps named `fabric: ...`; on GitLab, every `script:` line that does
not call GitLab's API. They run in order, as bash would run them in CI, in a real git clone
with a real `origin`, a base branch and a pull-request branch, against a real control plane:

  schedule (drift, apply)  bootstraps main: plan exits 2, apply, plan again exits 0;
  pull request             validates, plans only the changed tenant, saves the signed plan;
  merge to main            applies that saved plan, recording the merge commit and its author;
  stale plan               a reviewed plan whose tenant changed meanwhile is refused;
  schedule (drift, issue)  a hand edit in the database is found (exit 2), nothing is applied.

The hosting services' own steps (artifacts, comments, issues) cannot run here; their commands
are checked for the shape they must have.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import text

from fabric import api
from fabric.scaffold import ci_files
from fabric.settings import load_settings
from fabric.state.engine import make_engine
from fabric.state.secrets import tenant_schema

GITHUB = ".github/workflows/fabric.yml"
GITLAB = ".gitlab-ci.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def git(cwd: Path, *args: str, who: str = "alice") -> str:
    done = subprocess.run(
        ["git", "-c", f"user.name={who}", "-c", f"user.email={who}@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


class Checkout:
    """A clone of a bare `origin`, with fabric's repository written by `fabric init`."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp / "origin.git")])
        self.root = tmp / "work"
        api.init_repository(self.root, tenant="acme")
        git(self.root, "init", "-q", "-b", "main")
        git(self.root, "remote", "add", "origin", str(tmp / "origin.git"))
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", "fabric init")
        git(self.root, "push", "-q", "origin", "main")

    def commit_change(self, branch: str, path: str, old: str, new: str, *, who: str) -> str:
        git(self.root, "checkout", "-q", "-B", branch, "origin/main")
        file = self.root / path
        assert old in file.read_text()
        file.write_text(file.read_text().replace(old, new))
        git(self.root, "commit", "-q", "-am", f"{path}: {new}", who=who)
        git(self.root, "push", "-q", "-f", "origin", branch)
        return git(self.root, "rev-parse", "HEAD")

    def merge(self, branch: str, *, who: str) -> str:
        git(self.root, "checkout", "-q", "main")
        git(self.root, "pull", "-q", "--ff-only", "origin", "main")
        git(self.root, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch, who=who)
        git(self.root, "push", "-q", "origin", "main")
        return git(self.root, "rev-parse", "HEAD")

    def plan_is_clean(self) -> bool:
        return not api.plan(self.root, environ=self.env).plan.has_changes


@pytest.fixture
def checkout(tmp_path: Path, make_database) -> Checkout:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "fabric"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fabric "$@"\n')
    shim.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "home"),
        "FABRIC_DATABASE_URL": make_database(),
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return Checkout(tmp_path, env)


# -- GitHub Actions ---------------------------------------------------------------------------


class GitHubJob:
    """The `fabric: ...` steps of one job, run as the runner would (bash -e -o pipefail)."""

    def __init__(self, workflow: dict, name: str, checkout: Checkout, context: dict) -> None:
        self.job = workflow["jobs"][name]
        self.checkout = checkout
        self.context = context
        self.outputs: dict[str, dict[str, str]] = {}
        env = {**workflow.get("env", {}), **self.job.get("env", {})}
        self.env = {k: self.expand(str(v)) for k, v in env.items()}

    def expand(self, value: str) -> str:
        # an expression the test does not know fails it, so a new one is noticed
        return EXPRESSION.sub(lambda m: self.context[m.group(1)], value)

    def condition(self, expression: str) -> bool:
        """The two forms the templates' `if:` use: `a == 'b'` joined by `&&`."""
        values = {**{f"env.{k}": v for k, v in self.env.items()}}
        for step, outputs in self.outputs.items():
            values.update({f"steps.{step}.outputs.{k}": v for k, v in outputs.items()})
        for part in expression.split("&&"):
            left, _, right = part.partition("==")
            if values.get(left.strip()) != right.strip().strip("'"):
                return False
        return True

    def fabric_steps(self) -> list[dict]:
        return [s for s in self.job["steps"] if str(s.get("name", "")).startswith("fabric:")]

    def run(self, *, expect_failure: bool = False) -> list[str]:
        """Run the job's fabric steps in order; the names of those that ran."""
        ran = []
        for step in self.fabric_steps():
            if "if" in step and not self.condition(step["if"]):
                continue
            output = self.checkout.tmp / "github_output"
            output.write_text("")
            env = {
                **self.checkout.env,
                **self.env,
                **{k: self.expand(str(v)) for k, v in step.get("env", {}).items()},
                "GITHUB_OUTPUT": str(output),
                "GITHUB_SHA": self.context["github.sha"],
                "GITHUB_REPOSITORY": "owner/data",
            }
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", step["run"]],
                cwd=self.checkout.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            ran.append(step["name"])
            if done.returncode != 0:
                if expect_failure:
                    return [*ran, done.stdout + done.stderr]
                raise AssertionError(f"{step['name']} failed:\n{done.stdout}\n{done.stderr}")
            if "id" in step:
                pairs = (line.partition("=") for line in output.read_text().splitlines())
                self.outputs[step["id"]] = {k: v for k, _, v in pairs}
        assert not expect_failure, f"{ran} did not fail"
        return ran


def github_context(checkout: Checkout, *, sha: str = "", drift_action: str = "issue") -> dict:
    env = checkout.env
    return {
        "secrets.FABRIC_DATABASE_URL": env["FABRIC_DATABASE_URL"],
        "secrets.FABRIC_SECRET_KEYS": env["FABRIC_SECRET_KEYS"],
        "vars.FABRIC_INSTALL || 'etl-fabric'": "etl-fabric",
        "vars.FABRIC_DRIFT_ACTION || 'issue'": drift_action,
        "vars.FABRIC_LOCK_PRS || 'false'": "false",
        "github.workspace": str(checkout.root),
        "github.base_ref": "main",
        "github.sha": sha,
        "github.token": "unused",
        "github.event.pull_request.number": "7",
        "github.event.pull_request.head.sha": sha,
    }


def test_github_workflow_plans_pull_requests_applies_on_merge_and_finds_drift(checkout):
    workflow = yaml.safe_load(ci_files()[GITHUB])
    # NOTE: PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow[True]
    assert {"pull_request", "push", "schedule"} <= set(triggers)
    plan_dir = checkout.tmp / "fabric-plan"

    # schedule, FABRIC_DRIFT_ACTION=apply: bootstraps the control plane from main
    main_sha = git(checkout.root, "rev-parse", "HEAD")
    drift = GitHubJob(
        workflow, "drift", checkout, github_context(checkout, sha=main_sha, drift_action="apply")
    )
    assert drift.run() == [
        "fabric: plan against the control plane",
        "fabric: apply to repair the drift",
    ]
    assert drift.outputs["drift"]["exitcode"] == "2"
    assert checkout.plan_is_clean()
    again = GitHubJob(
        workflow, "drift", checkout, github_context(checkout, sha=main_sha, drift_action="apply")
    )
    assert again.run() == ["fabric: plan against the control plane"]  # no drift: nothing applied
    assert again.outputs["drift"]["exitcode"] == "0"

    # pull request by bob: one tenant's schedule changes; only that tenant is planned
    head = checkout.commit_change(
        "nightly-later", "tenants/acme/schedules.yaml", '"0 3 * * *"', '"30 4 * * *"', who="bob"
    )
    pr = GitHubJob(workflow, "plan", checkout, github_context(checkout, sha=head))
    assert pr.run() == ["fabric: validate", "fabric: plan the changed tenants"]
    comment = (plan_dir / "plan.md").read_text()
    assert "acme.schedule.nightly" in comment and "30 4 * * *" in comment
    assert (plan_dir / "plan.json").is_file()
    upload = next(s for s in pr.job["steps"] if "upload-artifact" in str(s.get("uses")))
    assert upload["with"]["name"] == "fabric-plan-${{ github.event.pull_request.head.sha }}"
    comment_step = next(
        s for s in pr.job["steps"] if s.get("name") == "Create or update the plan comment"
    )
    assert "<!-- fabric-plan -->" in comment_step["run"] and "PATCH" in comment_step["run"]

    # merged by carol: the push job applies exactly the reviewed plan
    merge_sha = checkout.merge("nightly-later", who="carol")
    push = GitHubJob(workflow, "apply", checkout, github_context(checkout, sha=merge_sha))
    assert push.run() == ["fabric: apply the reviewed plan"]
    assert checkout.plan_is_clean()
    (audited,) = api.apply_history(checkout.root, limit=1, environ=checkout.env)
    latest = audited.apply
    assert latest.git_commit == merge_sha
    assert latest.author == "carol@example.com"
    assert latest.updates == 1

    # a reviewed plan whose tenant changed after it was made is refused at merge
    head = checkout.commit_change(
        "nightly-earlier", "tenants/acme/schedules.yaml", '"30 4 * * *"', '"0 1 * * *"', who="bob"
    )
    GitHubJob(workflow, "plan", checkout, github_context(checkout, sha=head)).run()
    hand_edit(checkout, "5 5 * * *")
    merge_sha = checkout.merge("nightly-earlier", who="carol")
    push = GitHubJob(workflow, "apply", checkout, github_context(checkout, sha=merge_sha))
    *_, failure = push.run(expect_failure=True)
    assert "stale" in failure and "acme.schedule.nightly" in failure
    assert (
        api.apply_history(checkout.root, limit=1, environ=checkout.env)[0].apply.git_commit
        != merge_sha
    )

    # the nightly drift job (setting: issue) finds the hand edit and applies nothing
    drift = GitHubJob(workflow, "drift", checkout, github_context(checkout, sha=merge_sha))
    assert drift.run() == ["fabric: plan against the control plane"]
    assert drift.outputs["drift"]["exitcode"] == "2"
    assert "5 5 * * *" in (plan_dir / "drift.md").read_text()
    issue = next(s for s in drift.job["steps"] if s.get("name") == "Open or update the drift issue")
    assert issue["if"] == "steps.drift.outputs.exitcode == '2' && env.DRIFT_ACTION == 'issue'"
    assert "gh issue create" in issue["run"]


def hand_edit(checkout: Checkout, cron: str) -> None:
    """Change acme's schedule in the control plane by hand (drift: not through git)."""
    engine = make_engine(load_settings(checkout.env).database_url)
    try:
        with engine.begin() as conn:
            schema = tenant_schema(conn, "acme")
            conn.execute(
                text(
                    f'UPDATE "{schema}".schedules SET spec = jsonb_set(spec, '
                    "CAST(:path AS text[]), to_jsonb(CAST(:cron AS text))) WHERE name = 'nightly'"
                ),
                {"path": "{cron}", "cron": cron},
            )
    finally:
        engine.dispose()


# -- GitLab CI --------------------------------------------------------------------------------


def gitlab_run(
    pipeline: dict, job: str, checkout: Checkout, variables: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """A job's script, minus the lines that call GitLab's API, in one bash as the runner does."""
    lines = [line for line in pipeline[job]["script"] if "$GITLAB_API_TOKEN" not in line]
    env = {
        **checkout.env,
        **{k: str(v) for k, v in pipeline["variables"].items()},
        **{k: str(v) for k, v in pipeline[job].get("variables", {}).items()},
        **variables,
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", "\n".join(lines)],
        cwd=checkout.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gitlab_pipeline_plans_merge_requests_applies_on_merge_and_finds_drift(checkout):
    pipeline = yaml.safe_load(ci_files()[GITLAB])
    ok = lambda done: done.returncode == 0 or pytest.fail(done.stdout + done.stderr)  # noqa: E731

    sha = git(checkout.root, "rev-parse", "HEAD")
    ok(
        gitlab_run(
            pipeline,
            "fabric:drift",
            checkout,
            {"CI_COMMIT_SHA": sha, "FABRIC_DRIFT_ACTION": "apply"},
        )
    )
    assert checkout.plan_is_clean()

    checkout.commit_change(
        "nightly-later", "tenants/acme/schedules.yaml", '"0 3 * * *"', '"30 4 * * *"', who="bob"
    )
    # with the FABRIC_LOCK_PRS switch on, merge request 7 holds acme until its plan is applied
    mr = {"CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_MERGE_REQUEST_IID": "7"}
    ok(gitlab_run(pipeline, "fabric:validate", checkout, mr))
    ok(gitlab_run(pipeline, "fabric:plan", checkout, {**mr, "FABRIC_LOCK_PRS": "true"}))
    plan_dir = checkout.root / ".fabric-plan"
    assert "acme.schedule.nightly" in (plan_dir / "plan.md").read_text()
    assert pipeline["fabric:plan"]["artifacts"]["paths"] == [".fabric-plan/plan.json"]
    assert git(checkout.root, "status", "--porcelain") == ""  # the saved plan is git-ignored
    assert [
        (lock.tenant, lock.pr) for lock in api.pr_locks(checkout.root, environ=checkout.env)
    ] == [("acme", "7")]
    saved = (plan_dir / "plan.json").read_text()
    checkout.commit_change(
        "nightly-other", "tenants/acme/schedules.yaml", '"0 3 * * *"', '"0 6 * * *"', who="dave"
    )
    other = {**mr, "CI_MERGE_REQUEST_IID": "8", "FABRIC_LOCK_PRS": "true"}
    refused = gitlab_run(pipeline, "fabric:plan", checkout, other)
    assert refused.returncode == 4
    assert "tenant acme is locked by pull request 7 (bob <bob@example.com>)" in refused.stderr
    assert (plan_dir / "plan.json").read_text() == saved  # a refused plan is not saved

    merge_sha = checkout.merge("nightly-later", who="carol")
    ok(gitlab_run(pipeline, "fabric:apply", checkout, {"CI_COMMIT_SHA": merge_sha}))
    assert checkout.plan_is_clean()
    assert api.pr_locks(checkout.root, environ=checkout.env) == []  # released by its apply
    (audited,) = api.apply_history(checkout.root, limit=1, environ=checkout.env)
    latest = audited.apply
    assert (latest.git_commit, latest.author) == (merge_sha, "carol@example.com")

    hand_edit(checkout, "5 5 * * *")
    done = gitlab_run(pipeline, "fabric:drift", checkout, {"CI_COMMIT_SHA": merge_sha})
    ok(done)  # drift with FABRIC_DRIFT_ACTION=issue: the job passes, the issue call is skipped here
    assert "5 5 * * *" in (plan_dir / "drift.md").read_text()
    assert not checkout.plan_is_clean()  # nothing was applied
    ok(
        gitlab_run(
            pipeline,
            "fabric:drift",
            checkout,
            {"CI_COMMIT_SHA": merge_sha, "FABRIC_DRIFT_ACTION": "apply"},
        )
    )
    assert checkout.plan_is_clean()
