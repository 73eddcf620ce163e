"""The HTTP API (Starlette): agent, admin and operations routes (docs/api.md, /openapi.json)."""
