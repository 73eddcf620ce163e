"""The HTTP API (Starlette): agent, admin and operations routes (README and /openapi.json)."""
