"""Migration files: naming, safe templating, statement splitting."""

from __future__ import annotations

import pytest

from infra.clickhouse.migrate import load_migrations, render, split_statements, template_values
from infra.errors import ConfigError


def test_statements_split_outside_quotes_and_comments():
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (s String DEFAULT ';') ENGINE = Memory;\n" \
          "/* block; comment */ SELECT 'it''s; fine', `we;ird`, \"q;d\";\n\n;"
    assert split_statements(sql) == ["CREATE TABLE a (s String DEFAULT ';') ENGINE = Memory",
                                     "SELECT 'it''s; fine', `we;ird`, \"q;d\""]


def test_migrations_are_numbered_and_render_completely(base_settings):
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    values = template_values(base_settings.clickhouse)
    for m in migrations:
        for statement in render(m, values):
            assert "$" not in statement, f"unrendered placeholder in {m.name}"
            # re-runnable: guarded by IF NOT EXISTS, or a view's MODIFY QUERY or CREATE OR REPLACE VIEW (setting the
            # same query twice is a no-op)
            assert ("IF NOT EXISTS" in statement or " MODIFY QUERY\n" in statement
                    or statement.startswith("CREATE OR REPLACE VIEW ")), (
                f"{m.name}: every statement must be re-runnable")


@pytest.mark.parametrize("bad", ["modelbus; DROP DATABASE default", "a-b", "1db", "x`y", ""])
def test_database_names_that_could_inject_sql_are_refused(base_settings, bad):
    with pytest.raises(ConfigError, match="clickhouse.database"):
        template_values(base_settings.with_overrides(clickhouse={"database": bad}).clickhouse)


def test_ttl_values_come_from_settings(base_settings):
    s = base_settings.with_overrides(clickhouse={"telemetry_ttl_days": 7, "metadata_ttl_days": 99})
    rendered = [st for m in load_migrations() for st in render(m, template_values(s.clickhouse))]
    telemetry = next(st for st in rendered if "TABLE IF NOT EXISTS modelbus.inference_telemetry\n" in st)
    datasets = next(st for st in rendered if "TABLE IF NOT EXISTS modelbus.datasets\n" in st)
    assert "INTERVAL 7 DAY" in telemetry and "INTERVAL 99 DAY" in datasets
