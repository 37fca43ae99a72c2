"""Scaling: the pure policy, the replica backends, readiness probing, and the autoscaler that ties them."""
