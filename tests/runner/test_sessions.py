"""What a tenant's PostgreSQL sessions are pinned to.  [pure]

Real sessions (a dbt model, a dlt load, a SQL source, a probe) are checked in the tests of
the modules that open them.
"""

from __future__ import annotations

import pytest

from fabric.domain.runs import SessionLimits
from fabric.runner.sessions import session_options, with_session_options


def test_search_path_is_pg_catalog_then_the_schema_in_use_with_the_timeouts():
    limits = SessionLimits(statement_timeout=60, lock_timeout=5)
    assert session_options("acme_raw", limits) == (
        "-c search_path=pg_catalog,acme_raw -c statement_timeout=60s -c lock_timeout=5s"
    )


def test_no_schema_pins_pg_catalog_alone_and_zero_sets_no_timeout():
    limits = SessionLimits(statement_timeout=0, lock_timeout=0)
    assert session_options(None, limits) == "-c search_path=pg_catalog"


def test_a_mixed_case_schema_is_quoted_as_it_was_created():
    assert session_options("Sales", SessionLimits()).startswith('-c search_path=pg_catalog,"Sales"')


@pytest.mark.parametrize("schema", ["a b", "x,public", "a;drop", "x -c role=postgres", ""])
def test_a_schema_that_would_change_the_options_is_refused(schema: str):
    with pytest.raises(ValueError, match="not a schema name"):
        session_options(schema, SessionLimits())


def test_fabrics_options_come_after_the_connections_own_so_they_win():
    own = "-c search_path=evil,pg_catalog -c statement_timeout=0"
    options = with_session_options(own, "acme_raw", SessionLimits(statement_timeout=9))
    assert options.startswith(own)
    last = options.split(own, 1)[1]
    assert "search_path=pg_catalog,acme_raw" in last and "statement_timeout=9s" in last
    assert with_session_options(None, None, SessionLimits(lock_timeout=0, statement_timeout=0)) == (
        "-c search_path=pg_catalog"
    )
