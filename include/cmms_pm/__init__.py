"""Pure domain code of the CMMS predictive-maintenance model: data, validation, training, policy.

No Airflow or MLflow import lives here, so every function can be called from a notebook or a test.
"""
