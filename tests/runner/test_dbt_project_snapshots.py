"""The snapshot files of a tenant's generated dbt project (pure)."""

from __future__ import annotations

import yaml

from fabric.runner import dbt_project as dp

SQL = "select id, tier\nfrom {{ source('customers', 'customers') }}"
PROJECT = {
    "tenant": "acme",
    "transformations": {},
    "pipelines": {
        "customers": {"dataset": "acme_raw", "mode": "single_table", "table": "customers"}
    },
    "connections": {},
    "snapshots": {
        "history": {
            "sql": SQL,
            "schema": "acme_snapshots",
            "warehouse": "dwh",
            "unique_key": ["id", "tier"],
            "strategy": "check",
            "check_cols": "all",
            "updated_at": None,
            "hard_deletes": "new_record",
            "description": "All versions",
        }
    },
}


def test_a_snapshot_file_keeps_the_sql_lines_and_its_config_is_in_yaml():
    files = dp.project_files(PROJECT)
    body = files["snapshots/history.sql"]
    assert body == "{% snapshot history %}" + SQL + "\n{% endsnapshot %}\n"
    # line N of the file is line N of the tenant's SQL
    assert body.splitlines()[1] == SQL.splitlines()[1]
    doc = yaml.safe_load(files["snapshots/schema.yml"])
    assert doc["snapshots"] == [
        {
            "name": "history",
            "description": "All versions",
            "config": {
                "schema": "acme_snapshots",
                "unique_key": ["id", "tier"],
                "strategy": "check",
                "check_cols": "all",
                "hard_deletes": "new_record",
            },
        }
    ]
    # the snapshot's warehouse is a dbt target; its source is declared
    assert "dwh" in yaml.safe_load(files["profiles.yml"])["fabric_acme"]["outputs"]
    sources = yaml.safe_load(files["models/schema.yml"])["sources"]
    assert sources[0]["name"] == "customers"


def test_no_snapshots_no_snapshot_files():
    files = dp.project_files({**PROJECT, "snapshots": {}})
    assert not [f for f in files if f.startswith("snapshots/")]
    assert "snapshots" in dp.MANAGED_FOLDERS  # a removed snapshot's file is removed


def test_a_snapshot_that_breaks_parsing_is_stubbed_like_a_model():
    message = (
        "Compilation Error in snapshot history (snapshots/history.sql)\n"
        "  unexpected '}', expected ')'\n    line 2"
    )
    assert dp.unparsable_model(message, ["history", "totals"]) == "history"
    body = dp.project_files(PROJECT, unparsable=["history"])["snapshots/history.sql"]
    assert body.startswith("{% snapshot history %}") and "does not parse" in body
    assert SQL not in body
