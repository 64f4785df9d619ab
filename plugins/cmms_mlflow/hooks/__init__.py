"""Hooks: where MLflow lives and how to talk to it (the Airflow hook, per-session client settings, locks)."""
