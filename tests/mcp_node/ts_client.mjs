// The TypeScript SDK client against our /mcp (driven by tests/interfaces/test_mcp_node.py).
//
// Usage: node ts_client.mjs <url> <plan.json>   (Bearer token in MCP_TOKEN)
// plan.json: {"reads": {"<tool>": {arguments}}, "errors": [{"tool": "...", "arguments": {...}}]}
// Prints one JSON report on stdout: what the client saw, for the Python test to judge.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [url, planPath] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, "utf8"));
const report = { server: null, tools: 0, schemaProblems: [], reads: {}, errors: [] };

// Strict ajv: unknown keywords, union types ("type": [...]) and other loose constructs fail to
// compile, so a schema that passes here passes in the laxer validators clients use.
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);

const client = new Client({ name: "smsplatform-ts-test", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${process.env.MCP_TOKEN}` } },
});
await client.connect(transport);
report.server = client.getServerVersion();

const { tools } = await client.listTools();
report.tools = tools.length;
const outputValidators = {};
for (const tool of tools) {
  for (const [which, schema] of [["input", tool.inputSchema], ["output", tool.outputSchema]]) {
    try {
      const validate = ajv.compile(schema);
      if (which === "output") outputValidators[tool.name] = validate;
    } catch (err) {
      report.schemaProblems.push({ tool: tool.name, which, message: String(err.message || err) });
    }
  }
}

for (const [name, args] of Object.entries(plan.reads)) {
  const tool = tools.find((t) => t.name === name);
  const entry = { listed: Boolean(tool), readOnly: tool?.annotations?.readOnlyHint ?? null };
  try {
    // The SDK itself validates structuredContent against the listed outputSchema.
    const result = await client.callTool({ name, arguments: args });
    entry.isError = Boolean(result.isError);
    entry.text = result.content?.[0]?.text?.slice(0, 300);
    const validate = outputValidators[name];
    entry.outputValid = validate ? validate(result.structuredContent) : false;
    if (validate && !entry.outputValid) entry.outputErrors = ajv.errorsText(validate.errors);
    entry.textMatches = JSON.stringify(JSON.parse(result.content[0].text)) === JSON.stringify(result.structuredContent);
  } catch (err) {
    entry.thrown = `${err.code ?? ""} ${err.message ?? err}`;
  }
  report.reads[name] = entry;
}

for (const { tool, arguments: args } of plan.errors) {
  const entry = { tool };
  try {
    const result = await client.callTool({ name: tool, arguments: args });
    entry.isError = Boolean(result.isError);
    entry.hasStructured = result.structuredContent !== undefined;
    entry.error = JSON.parse(result.content[0].text).error;
  } catch (err) {
    entry.thrown = `${err.code ?? ""} ${err.message ?? err}`;
  }
  report.errors.push(entry);
}

await client.close();
process.stdout.write(JSON.stringify(report));
