"""The web service: a REST/JSON API under /api/v1/ and a browser UI, in front of the
gRPC services. It holds no state beyond sessions: every request is a gRPC call made
with the caller's own API key."""
