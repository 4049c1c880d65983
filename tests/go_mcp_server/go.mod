module toolgate.test/go_mcp_server

go 1.22
