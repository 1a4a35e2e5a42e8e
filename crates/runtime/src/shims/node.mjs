// Updraft's Node function runtime: a small HTTP server around a user's handler.
//
// `node node.mjs HANDLER` loads HANDLER (a file, or a folder with index.mjs, index.js
// or its package.json "main") and serves it on $PORT. With `--stem` it is a stem cell:
// Node and the server are loaded, and it waits for one JSON line on stdin
// ({"args": [HANDLER], "env": [[k, v], ...], "cwd": DIR}, and in a sandbox "uid" and
// "gid" to become) before loading the handler.
//
// The handler is the module's default export, `async function (request)`. `request`
// has method, path, query (an object), headers (lower-case names), body (a Buffer) and
// json() (the body parsed). It returns an object or array (sent as JSON), a string, a
// Buffer, or a fetch `Response`. A throw answers 500 with the stack in the logs (and
// in the response with UPDRAFT_DEBUG=1).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import readline from "node:readline";

async function load(handler) {
  let file = path.resolve(handler);
  if (fs.statSync(file).isDirectory()) {
    const pkg = path.join(file, "package.json");
    const main = fs.existsSync(pkg) ? JSON.parse(fs.readFileSync(pkg, "utf8")).main : undefined;
    const candidates = [main, "index.mjs", "index.js", "handler.mjs", "handler.js"].filter(Boolean);
    const found = candidates.map((c) => path.join(file, c)).find((c) => fs.existsSync(c));
    if (!found) throw new Error(`${handler}: no index.mjs, index.js or package.json main`);
    file = found;
  }
  const module = await import(pathToFileURL(file).href);
  const fn = typeof module.default === "function" ? module.default : module.handle;
  if (typeof fn !== "function") throw new Error(`${handler}: exports no default function`);
  return fn;
}

async function encode(result) {
  if (result instanceof Response) {
    const headers = Object.fromEntries(result.headers.entries());
    return [result.status, headers, Buffer.from(await result.arrayBuffer())];
  }
  if (Buffer.isBuffer(result)) return [200, { "content-type": "application/octet-stream" }, result];
  if (typeof result === "string") return [200, { "content-type": "text/plain; charset=utf-8" }, Buffer.from(result)];
  if (result === undefined || result === null) return [200, { "content-type": "text/plain" }, Buffer.alloc(0)];
  return [200, { "content-type": "application/json" }, Buffer.from(JSON.stringify(result))];
}

function serve(fn) {
  const debug = process.env.UPDRAFT_DEBUG === "1";
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, "http://localhost");
    const request = {
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams.entries()),
      headers: req.headers,
      body,
      json: () => JSON.parse(body.toString() || "null"),
    };
    let status, headers, out;
    try {
      [status, headers, out] = await encode(await fn(request));
    } catch (error) {
      const trace = (error && error.stack) || String(error);
      process.stderr.write(trace + "\n");
      [status, headers] = [500, { "content-type": "text/plain; charset=utf-8" }];
      out = Buffer.from(debug ? trace : "the function threw; see the logs\n");
    }
    res.writeHead(status, { ...headers, "content-length": out.length });
    res.end(out);
  });
  server.listen(Number(process.env.PORT), "127.0.0.1");
}

async function main() {
  let handler = process.argv[2];
  if (handler === "--stem") {
    const lines = readline.createInterface({ input: process.stdin });
    const line = await new Promise((resolve) => lines.once("line", resolve));
    lines.close();
    const order = JSON.parse(line);
    if (order.uid !== undefined) {
      // Sandboxed, the stem is root able only to become its namespace's user.
      process.setgroups([]);
      process.setgid(order.gid);
      process.setuid(order.uid);
    }
    for (const key of Object.keys(process.env)) delete process.env[key];
    Object.assign(process.env, Object.fromEntries(order.env));
    process.chdir(order.cwd);
    handler = order.args[0];
  }
  let fn;
  try {
    fn = await load(handler);
  } catch (error) {
    process.stderr.write(((error && error.stack) || String(error)) + "\n");
    process.exit(3);
  }
  serve(fn);
}

main();
