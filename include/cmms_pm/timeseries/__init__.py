"""Time-series predictive maintenance: raw telemetry and event logs in, leak-free feature tables out.

* :mod:`~cmms_pm.timeseries.config` — the typed view of a spec's ``timeseries`` section;
* :mod:`~cmms_pm.timeseries.sql` — the one SQL generator (DuckDB and PostgreSQL dialects) that turns
  raw tables into snapshots x point-in-time features x forward-looking labels;
* :mod:`~cmms_pm.timeseries.engine` — where that SQL runs (embedded DuckDB, or a database);
* :mod:`~cmms_pm.timeseries.build` — sources, bad-input checks, the feature table;
* :mod:`~cmms_pm.timeseries.split` — forward-in-time splits with purged gaps (and grouped splits);
* :mod:`~cmms_pm.timeseries.snapshot_batch` — a run's batch; :mod:`~cmms_pm.timeseries.scoring` — the
  latest snapshot per asset; :mod:`~cmms_pm.timeseries.generator` — raw fleet data for tests, demos
  and benchmarks.

Importing this package is cheap (the DAG factory reads specs at parse time): the modules import
pandas, pyarrow and duckdb only where they use them.
"""
