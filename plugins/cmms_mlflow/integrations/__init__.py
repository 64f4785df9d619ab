"""Airflow and the world around it: assets, links, lineage, metrics, notifiers, data sources,
Kubernetes pods and the worker preload."""
