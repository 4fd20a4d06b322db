// A typed reader of the live events (GET /api/tasks/events), as a frontend
// would keep one open: it parses Server-Sent Events from fetch's stream,
// and reconnects after its last event id (`Last-Event-ID`), so a dropped
// connection loses nothing.

import assert from "node:assert/strict";
import createClient from "openapi-fetch";

import type { components, paths } from "../generated/openapi-typescript/schema.js";
import { args } from "./check.js";

type Change = components["schemas"]["ChangeOut"];
type Task = components["schemas"]["TaskOut"];

export type LiveEvent =
  | { kind: "change"; id: string; change: Change }
  | { kind: "ready"; cursor: string }
  | { kind: "token_expired" };

function isTask(v: unknown): v is Task {
  return typeof v === "object" && v !== null && "id" in v && typeof v.id === "number" && "version" in v;
}

function isChange(v: unknown): v is Change {
  if (typeof v !== "object" || v === null || !("op" in v) || !("version" in v)) return false;
  if (v.op === "upsert") return "task" in v && isTask(v.task);
  return v.op === "delete" && "id" in v && typeof v.id === "number";
}

function cursorOf(v: unknown): string | undefined {
  return typeof v === "object" && v !== null && "cursor" in v && typeof v.cursor === "string" ? v.cursor : undefined;
}

/** One connection's events, in order, until it ends or `signal` aborts. */
async function* connect(
  baseUrl: string,
  token: string,
  lastEventId: string | undefined,
  signal: AbortSignal,
): AsyncGenerator<LiveEvent> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
  if (lastEventId !== undefined) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(`${baseUrl}/api/tasks/events`, { headers, signal });
  if (!response.ok || response.body === null) throw new Error(`events: ${response.status}`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      let id: string | undefined;
      let name = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        const colon = line.indexOf(":");
        if (colon <= 0) continue; // a comment (heartbeat) or nothing
        const field = line.slice(0, colon);
        const text = line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = text;
        else if (field === "event") name = text;
        else if (field === "data") data += text;
      }
      const parsed: unknown = data === "" ? null : JSON.parse(data);
      if ((name === "upsert" || name === "delete") && id !== undefined && isChange(parsed)) {
        yield { kind: "change", id, change: parsed };
      } else if (name === "ready") {
        yield { kind: "ready", cursor: cursorOf(parsed) ?? "0" };
      } else if (name === "token_expired") {
        yield { kind: "token_expired" };
      }
    }
  }
}

/**
 * Events until `signal` aborts: on a dropped connection (or an
 * expired token, with a fresh one from `token()`), it reconnects after the
 * last event it gave.
 */
export async function* liveEvents(
  baseUrl: string,
  token: () => string,
  signal: AbortSignal,
  lastEventId?: string,
): AsyncGenerator<LiveEvent> {
  let last = lastEventId;
  while (!signal.aborted) {
    try {
      for await (const event of connect(baseUrl, token(), last, signal)) {
        if (event.kind === "change") last = event.id;
        yield event;
      }
    } catch (error) {
      if (signal.aborted) return;
      console.error(`events: reconnecting after ${String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

// --- Run against a real server ------------------------------------------------

const { baseUrl, token } = args();
const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

/** The next event other than `ready`, from an open reader. */
async function next(events: AsyncGenerator<LiveEvent>): Promise<LiveEvent> {
  const { value, done } = await events.next();
  assert.ok(!done && value !== undefined, "the stream ended");
  return value;
}

const first = new AbortController();
const events = liveEvents(baseUrl, () => token, first.signal);
const ready = await next(events);
assert.equal(ready.kind, "ready");

// Each change seen before the next is made: the stream sends the feed's
// changes, each task once at its latest state, so changes made in quick
// succession may arrive as their result only (a toggle then a delete: the delete).
const created = await api.POST("/api/tasks", { body: { title: "Seen live" } });
assert.ok(created.data);
const id = created.data.id;
const seen: LiveEvent[] = [await next(events)];
await api.PATCH("/api/tasks/{id}/complete", { params: { path: { id } } });
seen.push(await next(events));
await api.DELETE("/api/tasks/{id}", { params: { path: { id } } });
seen.push(await next(events));
const ops = seen.map((e) => (e.kind === "change" ? e.change.op : e.kind));
assert.deepEqual(ops, ["upsert", "upsert", "delete"]);
const toggled = seen[1];
assert.ok(toggled !== undefined && toggled.kind === "change" && toggled.change.op === "upsert");
assert.equal(toggled.change.task.completed, true);
const lastSeen = seen[2];
assert.ok(lastSeen !== undefined && lastSeen.kind === "change");
first.abort();

// Disconnected: a change happens; the reader resumes after its last id.
const missed = await api.POST("/api/tasks", { body: { title: "Made while away" } });
assert.ok(missed.data);
const again = new AbortController();
const resumed = liveEvents(baseUrl, () => token, again.signal, lastSeen.id);
const caughtUp = await next(resumed);
assert.ok(caughtUp.kind === "change" && caughtUp.change.op === "upsert");
assert.equal(caughtUp.change.task.title, "Made while away");
assert.equal((await next(resumed)).kind, "ready");
again.abort();

console.log("events: ok");
