"""MLflow operator plugin: hook, operators, registry logic and UI links for training pipelines."""
