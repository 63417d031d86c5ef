"""dbt's error text -> its meaningful line at the line of the user's SQL (pure)."""

from __future__ import annotations

import pytest

from fabric.runner.dbt_errors import headline

SQL = (
    "-- staging\n"
    "select id,\n"
    "       amount as amout_total,\n"
    "       amout\n"
    "from {{ source('shop', 'orders') }}\n"
)
# As dbt-postgres reports it: LINE is counted in the statement dbt sent (its `create view ...
# as (` wrapper around the compiled SQL), so it is not the line of the model's own SQL.
DATABASE_ERROR = """\
Database Error in model stg_events (models/stg_events.sql)
  column "amout" does not exist
  LINE 6:        amout
                 ^
  compiled code at target/run/fabric_acme/models/stg_events.sql"""


def test_the_database_message_comes_first_at_the_line_of_the_sql_file():
    assert headline(DATABASE_ERROR, SQL, "tenants/acme/models/stg_events.sql") == (
        'tenants/acme/models/stg_events.sql:4: column "amout" does not exist'
    )


def test_inline_sql_names_its_line():
    assert headline(DATABASE_ERROR, SQL, None) == 'SQL line 4: column "amout" does not exist'


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Database Error in model x (models/x.sql)\n  permission denied for schema y",
            "permission denied for schema y",
        ),
        (
            "could not connect to server: Connection refused",
            "could not connect to server: Connection refused",
        ),
        # a position in no line of the SQL, and nothing but dbt's header: the header stays
        (
            "Database Error in model x (models/x.sql)\n  LINE 1: zzz\n          ^",
            "Database Error in model x (models/x.sql)",
        ),
    ],
)
def test_without_a_position_the_first_meaningful_line_is_kept(message: str, expected: str):
    assert headline(message, SQL, "tenants/acme/models/x.sql") == expected


def test_a_jinja_error_uses_the_line_dbt_gives_in_the_model():
    message = (
        "Compilation Error in model x (models/x.sql)\n"
        "  expected token 'end of print statement', got 'as'\n"
        "    line 3\n"
        "      {{ 1 + }} as x"
    )
    assert headline(message, "select\n  1,\n  {{ 1 + }} as x\n", None) == (
        "SQL line 3: expected token 'end of print statement', got 'as'"
    )
