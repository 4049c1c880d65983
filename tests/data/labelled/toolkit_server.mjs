// Serve a payments toolkit's own MCP server class over stdio with every tool enabled, the way
// the toolkits' READMEs show it (`new PayPalAgentToolkit({...}); server.connect(transport)`).
// The credentials are dummies: listing the tools calls no API. Used by dump_tools.py only.
//
//   node toolkit_server.mjs paypal|stripe
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

// `configuration.actions[resource][action] === true` for every resource and action.
const everything = new Proxy({}, { get: () => new Proxy({}, { get: () => true }) });

let server;
if (process.argv[2] === "paypal") {
  const { PayPalAgentToolkit } = await import("@paypal/agent-toolkit/mcp");
  server = new PayPalAgentToolkit({ accessToken: "dummy", configuration: { actions: everything } });
} else if (process.argv[2] === "stripe") {
  const { StripeAgentToolkit } = await import("@stripe/agent-toolkit/modelcontextprotocol");
  server = new StripeAgentToolkit({
    secretKey: "sk_test_dummy",
    configuration: { actions: everything },
  });
} else {
  console.error("usage: node toolkit_server.mjs paypal|stripe");
  process.exit(2);
}
await server.connect(new StdioServerTransport());
