module toolgate.bench/mcp_standin

go 1.24
