"""The model registry: stages and aliases (snapshot → plan → apply), promotions, history, pruning."""
