"""Training sets from late labels, Ray Train CatBoost jobs, evaluation and the model registry."""
