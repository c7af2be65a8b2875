"""Ray Serve application of an Endpoint: an authenticating, traffic-splitting router in front
of one deployment per deployed model (or, for a single deployed model, that model's deployment
as the authenticating ingress). Runs inside the cluster."""
