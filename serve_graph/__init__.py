"""Ray Serve deployments, request/response schema, policy engine and decision combiner."""
