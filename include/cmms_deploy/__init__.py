"""Deployment tooling for the production stack (MLflow server setup); no Airflow import."""
