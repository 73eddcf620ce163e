"""The gateway as a metering MCP server in front of upstream MCP servers: the server face
(server.py), metered tool calls (calls.py), registered upstreams (registry.py), pooled
client sessions to them (upstream.py), admin routes (admin_routes.py) and the stdio bridge
of ``iou mcp`` (bridge.py)."""
