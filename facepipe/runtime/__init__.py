"""The runtime every facepipe service shares: config, logs, gRPC server, health, metrics, tracing."""
