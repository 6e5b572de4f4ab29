"""Jinja context for sqlfluff's jinja templater (dbt/.sqlfluff `library_path`).

sqlfluff renders the models with plain Jinja plus its dbt builtins (`ref`, `source`,
`var`, `config`) and the macros in macros/, so two things dbt provides are missing: the
`as_bool` filter and the project's macro namespace (`sfdc_sync.month_start(...)`).
Namespaced calls render as a function call of the same name, which is all the linter
needs to parse the statement; the macros' own SQL is dialect-specific and tested by dbt.
"""

from typing import Any

from jinja2.filters import FILTERS


def _as_bool(value: Any) -> Any:
    """dbt's `as_bool` in a .sql file: the identity (it only coerces in YAML configs)."""
    return value


# Macros that render a whole query (macros/incremental.sql), not an expression: a query
# of the same shape, so the statement around them parses.
_QUERY_MACROS = {
    "changed_ids": "select id from changed",
    "touched_values": "select key_id from touched",
    "incremental_batch": "select * from final",
}


class _MacroNamespace:
    """`sfdc_sync.<macro>(args)` renders as `<macro>(args)`, or as a stand-in query."""

    def __getattr__(self, name: str) -> Any:
        def render(*args: Any, **kwargs: Any) -> Any:
            if name == "inlined_keys":
                return {"list": "(select key_id from keys)", "relation": "select key_id from keys"}
            if name in _QUERY_MACROS:
                return _QUERY_MACROS[name]
            return f"{name}({', '.join(str(arg) for arg in [*args, *kwargs.values()])})"

        return render


SQLFLUFF_JINJA_FILTERS = {"as_bool": _as_bool}
# sqlfluff gives SQLFLUFF_JINJA_FILTERS to the rendering environment only; the slicer
# builds a second one for `{% set %}` blocks (fct_pipeline.sql), which starts from Jinja's
# default filters, so the filter goes there too. This module loads only inside sqlfluff.
FILTERS["as_bool"] = _as_bool
sfdc_sync = _MacroNamespace()


def env_var(name: str, default: str = "") -> str:
    """dbt's `env_var`: the default (the linter reads no environment)."""
    return default


class _Target:
    """dbt's `target`, as far as a model reads it."""

    database = "warehouse"
    schema = "analytics"
    type = "duckdb"


target = _Target()

# dbt's parse phase: no queries run, so `execute and adapter.<...>` checks are skipped.
execute = False
