// An OpenID provider on loopback for tests/sso: oidc-provider with one static
// client and the accounts the test passes, each with a password checked by the
// login form below. Usage: node provider.mjs '<json config>'
//   {"port": 0, "issuer": "http://127.0.0.1:PORT", "client": {"client_id",
//    "client_secret", "redirect_uris": [...]}, "accounts": {"alice":
//    {"password": "...", "claims": {...}}}}
// Prints {"ready": true, "issuer": ...} once it listens.
import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import Provider from "oidc-provider";

const config = JSON.parse(process.argv[2]);
const SCOPE = "openid email profile groups";
// A signing key of its own for each run: ID tokens are RS256, checked by
// Parley against this provider's JWKS endpoint.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: "jwk" }),
  kid: "parley-test-key",
  alg: "RS256",
  use: "sig",
};

function account(id) {
  const known = config.accounts[id];
  if (!known) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, ...known.claims };
    },
  };
}

const provider = new Provider(config.issuer, {
  clients: [
    {
      ...config.client,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "given_name", "family_name", "preferred_username"],
    groups: ["groups"],
  },
  cookies: { keys: ["parley-sso-test-cookie-key"] },
  jwks: { keys: [signingKey] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, id) => account(id),
  // A first-party client: the user is never asked to consent.
  async loadExistingGrant(ctx) {
    const grantId =
      ctx.oidc.result?.consent?.grantId ||
      ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPE);
    await grant.save();
    return grant;
  },
});

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Test provider</title>
<link rel="icon" href="data:,"></head><body><h1>Test provider: sign in</h1>
${error ? `<p role="alert">${escape(error)}</p>` : ""}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function readForm(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name !== "login") {
    // Consent is given by loadExistingGrant; anything else ends the flow.
    return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
  }
  if (req.method === "GET" && !action) {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(loginPage(uid));
  }
  const form = await readForm(req);
  const id = form.get("username") || "";
  const known = config.accounts[id];
  if (!known || known.password !== form.get("password")) {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(loginPage(uid, "Wrong username or password."));
  }
  return provider.interactionFinished(
    req,
    res,
    { login: { accountId: id } },
    { mergeWithLastSubmission: false },
  );
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const path = new URL(req.url, config.issuer).pathname;
  const match = path.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
  if (!match) return callback(req, res);
  interaction(req, res, match[1], match[2]).catch((error) => {
    console.error(error);
    if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
    res.end(`interaction failed: ${error.message}`);
  });
});

server.listen(config.port, "127.0.0.1", () => {
  console.log(JSON.stringify({ ready: true, issuer: config.issuer }));
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
