"""Generated from proto/facepipe/v1 by `make proto`; do not edit."""
