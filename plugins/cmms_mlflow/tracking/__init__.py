"""MLflow runs this package writes and reads: training, tuning trials, evaluation, scoring, outcomes,
model cards, and the trusted loading of the models they logged."""
