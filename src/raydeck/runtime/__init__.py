"""Code that runs inside Ray: serving deployments, batch prediction, framework predictors."""
