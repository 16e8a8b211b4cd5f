// Sign and verify webhooks with the providers' own npm libraries.
//
// Driven by the Rust interop tests: `node node_interop.mjs <npm prefix>` reads
// {"cases": [...]} as JSON on stdin and prints one JSON result per case.
// A case is {"lib": "octokit" | "shopify", "op": "sign" | "verify",
//            "secret": str, "id": str, "body": str, "headers": {..}}.
// "sign" answers {"headers": {..}}; "verify" answers {"ok", "error", "id"}.
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.argv[2] && resolve(process.argv[2]);
if (!prefix) {
  console.error("usage: node node_interop.mjs <npm prefix>");
  process.exit(2);
}
const modules = join(prefix, "node_modules");
const require = createRequire(join(prefix, "package.json"));

const octokit = await import(
  pathToFileURL(join(modules, "@octokit/webhooks-methods/dist-node/index.js")).href
);

let shopifyLib;
function shopify() {
  if (!shopifyLib) {
    require("@shopify/shopify-api/adapters/web-api");
    const api = require("@shopify/shopify-api");
    const helpers = require("@shopify/shopify-api/test-helpers");
    shopifyLib = { api, helpers };
  }
  return shopifyLib;
}

// The newest dated API version this library release knows.
function apiVersion(api) {
  return Object.values(api.ApiVersion)
    .filter((v) => /^\d{4}-\d{2}$/.test(v))
    .sort()
    .pop();
}

function lower(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers ?? {})) out[k.toLowerCase()] = v;
  return out;
}

async function octokitCase(c) {
  if (c.op === "sign") {
    const sig = await octokit.sign(c.secret, c.body);
    return { headers: { "X-GitHub-Delivery": c.id, "X-Hub-Signature-256": sig } };
  }
  const h = lower(c.headers);
  try {
    const ok = await octokit.verify(c.secret, c.body, h["x-hub-signature-256"] ?? "");
    return { ok, error: ok ? null : "verify: false", id: ok ? h["x-github-delivery"] ?? null : null };
  } catch (e) {
    return { ok: false, error: String(e), id: null };
  }
}

async function shopifyCase(c) {
  const { api, helpers } = shopify();
  if (c.op === "sign") {
    // The library's own test helper: base64 HMAC-SHA256 of the body.
    const hmac = helpers.getHmac(c.body, c.secret);
    return { headers: { "X-Shopify-Webhook-Id": c.id, "X-Shopify-Hmac-Sha256": hmac } };
  }
  const shopifyApi = api.shopifyApi({
    apiKey: "hookgate-interop",
    apiSecretKey: c.secret,
    scopes: [],
    hostName: "localhost",
    apiVersion: apiVersion(api),
    isEmbeddedApp: false,
    logger: { level: api.LogSeverity.Error, log: async () => {} },
  });
  // webhooks.validate also requires the topic/shop/version headers Shopify sends.
  const headers = new Headers({
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "hookgate-test.myshopify.com",
    "X-Shopify-API-Version": apiVersion(api),
    ...c.headers,
  });
  const rawRequest = new Request("https://localhost/webhooks", {
    method: "POST",
    headers,
    body: c.body,
  });
  const result = await shopifyApi.webhooks.validate({ rawBody: c.body, rawRequest });
  return {
    ok: result.valid === true,
    error: result.valid ? null : JSON.stringify(result),
    id: result.valid ? result.webhookId ?? null : null,
  };
}

const HANDLERS = { octokit: octokitCase, shopify: shopifyCase };

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { cases } = JSON.parse(input);
const results = [];
for (const c of cases) results.push(await HANDLERS[c.lib](c));
process.stdout.write(JSON.stringify(results));
