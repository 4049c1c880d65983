"""Reading an MCP server's tools (``toolgate scan``) and classifying each by what it can do."""
