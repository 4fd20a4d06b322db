// An offline-first copy of the list, as a frontend would keep one: it
// catches up through the changes feed (reloading when its cursor expired),
// and edits with If-Match, resolving a 412 by taking the server's task and
// applying the edit again on top of it.

import assert from "node:assert/strict";
import createClient from "openapi-fetch";

import type { components, paths } from "../generated/openapi-typescript/schema.js";
import { args, messageFor } from "./check.js";

type Task = components["schemas"]["TaskOut"];
/** What a write of one task answers (openapi-fetch's result). */
type Sent =
  | { data: Task; error?: never; response: Response }
  | { data?: never; error: components["schemas"]["ErrorBody"]; response: Response };
type Api = ReturnType<typeof createClient<paths>>;

/** One device's copy: the tasks and the cursor they are current at. */
class LocalCopy {
  tasks = new Map<number, Task>();
  cursor = "0";

  constructor(private readonly api: Api) {}

  /** Applies every change since the cursor; a 410 reloads from scratch. */
  async sync(): Promise<void> {
    for (;;) {
      const { data, error, response } = await this.api.GET("/api/tasks/changes", {
        params: { query: { since: this.cursor, limit: 2 } },
      });
      if (response.status === 410) {
        this.tasks.clear();
        this.cursor = "0";
        continue;
      }
      if (error !== undefined) throw new Error(messageFor(error.code));
      for (const change of data.changes) {
        if (change.op === "upsert") this.tasks.set(change.task.id, change.task);
        else this.tasks.delete(change.id);
      }
      this.cursor = data.cursor;
      if (!data.has_more) return;
    }
  }

  /** Renames a task, never over a change this copy has not seen. */
  rename(id: number, title: string): Promise<Task> {
    return this.edit(id, (ifMatch) =>
      this.api.PUT("/api/tasks/{id}", {
        params: { path: { id }, header: { "If-Match": ifMatch } },
        body: { title },
      }),
    );
  }

  /** Marks a task done, under the same rule. */
  complete(id: number): Promise<Task> {
    return this.edit(id, (ifMatch) =>
      this.api.PATCH("/api/tasks/{id}/complete", {
        params: { path: { id }, header: { "If-Match": ifMatch } },
        body: { completed: true },
      }),
    );
  }

  /** Sends a write with the held task's tag; on 412 takes the current task and sends again. */
  private async edit(id: number, send: (ifMatch: string) => Promise<Sent>): Promise<Task> {
    for (;;) {
      const held = this.tasks.get(id);
      assert.ok(held, `task ${id} is not in this copy`);
      const { data, error, response } = await send(`"${held.version}"`);
      if (data !== undefined) {
        this.tasks.set(id, data);
        return data;
      }
      // Changed elsewhere: the 412 holds the task as it is; edit that.
      if (response.status === 412 && error.task !== undefined) {
        this.tasks.set(id, error.task);
        continue;
      }
      throw new Error(messageFor(error.code));
    }
  }
}

const { baseUrl, token } = args();
const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

/** What the server holds now, by id. */
async function serverList(): Promise<Map<number, Task>> {
  const { data } = await api.GET("/api/tasks");
  assert.ok(data);
  return new Map(data.map((t) => [t.id, t]));
}

// Two devices of one user, each with its own copy.
const laptop = new LocalCopy(api);
const phone = new LocalCopy(api);
await laptop.sync();
await phone.sync();

for (const title of ["Buy milk", "Call mum", "Water plants"]) {
  await api.POST("/api/tasks", { body: { title } });
}
await laptop.sync();
await phone.sync();
assert.deepEqual(laptop.tasks, await serverList());
const [milk, mum, plants] = [...laptop.tasks.keys()].sort((a, b) => a - b);
assert.ok(milk !== undefined && mum !== undefined && plants !== undefined);

// The phone renames a task; the laptop, still at the old version, marks it
// done: 412, the laptop takes the renamed task and completes that.
await phone.rename(milk, "Buy oat milk");
const done = await laptop.complete(milk);
assert.equal(done.title, "Buy oat milk", "the rename survived");
assert.equal(done.completed, true);

// A delete on the laptop; the phone, offline meanwhile, catches up in one go.
const deleted = await api.DELETE("/api/tasks/{id}", {
  params: { path: { id: mum }, header: { "If-Match": `"${laptop.tasks.get(mum)?.version ?? 0}"` } },
});
assert.equal(deleted.response.status, 200);
await phone.sync();
await laptop.sync();
const now = await serverList();
assert.deepEqual(phone.tasks, now);
assert.deepEqual(laptop.tasks, now);
assert.ok(!phone.tasks.has(mum) && phone.tasks.has(plants));

// A cursor the server cannot answer (ahead of the user's version): 410, and
// the copy reloads.
phone.cursor = "999999";
await phone.sync();
assert.deepEqual(phone.tasks, now);

console.log("offline: ok");
