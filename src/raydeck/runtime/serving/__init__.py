"""Ray Serve application of an Endpoint: an authenticating, traffic-splitting router in front
of one deployment per deployed model. Runs inside the cluster."""
