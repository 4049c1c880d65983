# OPA's side of bench/peers_bench.py: toolgate's bench policy (bench/peers/policy_authz.json)
# as a Rego rule over the MCP JSON-RPC body that Envoy's ext_authz Check carries. The Envoy
# plugin parses a JSON body into input.parsed_body.
#
# - a JSON-RPC request that is not tools/call (initialize, tools/list, ...): allowed;
# - tools/call of run_command: allowed unless arguments.command matches the regex;
# - tools/call of any other tool: denied (the policy's default is deny).
package toolgate.authz

import rego.v1

default allow := false

body := input.parsed_body

allow if {
	is_string(body.method)
	body.method != "tools/call"
}

allow if {
	body.method == "tools/call"
	body.params.name == "run_command"
	not destructive
}

destructive if regex.match(`(^|\s)(rm|mkfs|dd)\s`, body.params.arguments.command)
