"""One module per migration, chained by ``down_revision``: 0001 runs, 0002 schedules and
triggers, 0003 alerts, 0004 audit."""
