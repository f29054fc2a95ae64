// The contract check of the end-to-end tests: every packet a socket.io-client
// socket of these tests receives from a chat edge (every event, every ack,
// every CONNECT and CONNECT_ERROR) is validated against docs/schema/chat.schema.json,
// and so is every chat event a raw test client decodes (harness.parseSio). A
// payload that does not match (a null where a string belongs, a field too many)
// is recorded as a violation; the harness's test() fails the test that was
// running (and shutdown() the file) when there is one.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Socket } from "socket.io-client";
import Ajv2020 from "ajv/dist/2020.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const SCHEMA_PATH = path.resolve(here, "../../docs/schema/chat.schema.json");
export const schema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8"));

// strictTuples off: a recoverable event has one argument, or two with its offset (minItems 1 of a 2-tuple).
const ajv = new Ajv2020({ strict: true, strictTuples: false, allErrors: true });
ajv.addSchema(schema);
const compiled = new Map();
function validator(def) {
  if (!(def in schema.$defs)) return null;
  if (!compiled.has(def)) compiled.set(def, ajv.getSchema(`${schema.$id}#/$defs/${def.replace(/~/g, "~0").replace(/\//g, "~1")}`));
  return compiled.get(def);
}

/** The server events the schema describes ("message:received", ...). */
export const SERVER_EVENTS = Object.keys(schema.$defs).filter((k) => k.startsWith("event:")).map((k) => k.slice(6));
/** The client events whose acks the schema describes. */
export const ACKED_EVENTS = Object.keys(schema.$defs)
  .filter((k) => k.startsWith("ack:") && k !== "ack:unknown")
  .map((k) => k.slice(4));

/** Errors of value against $defs/def, or [] when it matches. */
export function check(def, value) {
  const v = validator(def);
  if (!v) return [`no schema $defs/${def}`];
  return v(value) ? [] : v.errors.map((e) => `${e.instancePath || "(root)"} ${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`);
}

const violations = [];
/** How many payloads were checked (the contract test makes sure the hooks run). */
export const checked = { count: 0 };

function record(what, errors, value) {
  checked.count++;
  if (errors.length === 0) return;
  const v = `${what}: ${errors.join("; ")} — got ${JSON.stringify(value)?.slice(0, 600)}`;
  violations.push(v);
  console.error(`[contract] ${v}`);
}

/** Violations seen since the last call (and forgets them). */
export function takeViolations() {
  return violations.splice(0);
}

/** Checks the argument list of a server event (strict: an event the schema does not know is a violation). */
export function checkEvent(name, args, where = "") {
  record(`event ${name}${where}`, SERVER_EVENTS.includes(name) ? check(`event:${name}`, args) : ["not an event of the schema"], args);
}

/** Checks the ack of the client event name. */
export function checkAck(name, args, where = "") {
  record(`ack of ${name}${where}`, check(ACKED_EVENTS.includes(name) ? `ack:${name}` : "ack:unknown", args), args);
}

// ---- socket.io-client: every socket of every test file ----

const chatPorts = new Set(); // ports of chat-mode edges (conformance-mode edges have other events)

/** harness.startEdge: the edge on port runs the chat application. */
export function markChatEdge(port) {
  chatPorts.add(String(port));
}

function isChat(socket) {
  try {
    return socket.nsp === "/" && chatPorts.has(new URL(socket.io.uri).port);
  } catch {
    return false;
  }
}

const acked = new WeakMap(); // socket -> Map(ack id -> event name)

const origEmit = Socket.prototype.emit;
Socket.prototype.emit = function (ev, ...args) {
  if (typeof args[args.length - 1] === "function") {
    if (!acked.has(this)) acked.set(this, new Map());
    acked.get(this).set(this.ids, ev); // the id emit is about to give it
  }
  return origEmit.call(this, ev, ...args);
};

const origOnpacket = Socket.prototype.onpacket;
Socket.prototype.onpacket = function (packet) {
  if (packet.nsp === this.nsp && isChat(this)) {
    const where = ` (socket ${this.id ?? "connecting"} on ${this.io.uri})`;
    switch (packet.type) {
      case 0: // CONNECT
        record(`CONNECT${where}`, check("connect", packet.data), packet.data);
        break;
      case 4: // CONNECT_ERROR
        record(`CONNECT_ERROR${where}`, check("connect_error", packet.data), packet.data);
        break;
      case 2: // EVENT
      case 5: {
        const [name, ...args] = Array.isArray(packet.data) ? packet.data : [];
        checkEvent(String(name), args, where);
        break;
      }
      case 3: // ACK
      case 6: {
        const name = acked.get(this)?.get(packet.id);
        acked.get(this)?.delete(packet.id);
        if (name === undefined) record(`ACK ${packet.id}${where}`, ["an ack for no event this socket emitted with one"], packet.data);
        else checkAck(name, packet.data, where);
        break;
      }
    }
  }
  return origOnpacket.call(this, packet);
};
