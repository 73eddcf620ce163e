"""The HTTP API (Starlette): agent, admin and operations routes of CONTRACT.md."""
