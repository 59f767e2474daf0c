"""The shared ground under every process: settings, auth, logging, runtime, ops endpoints."""
