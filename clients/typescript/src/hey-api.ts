// @hey-api/openapi-ts's SDK with its default fetch client, used as a
// frontend would: every call of the API, against a real server, no casts.

import assert from "node:assert/strict";

import { createClient, createConfig } from "../generated/hey-api/client/index.js";
import { client } from "../generated/hey-api/client.gen.js";
import {
  completeTask,
  createTask,
  deleteTask,
  getTask,
  health,
  listTasks,
  updateTask,
  type TaskOut,
} from "../generated/hey-api/index.js";
import { args, messageFor } from "./check.js";

const { baseUrl, token } = args();
client.setConfig({ baseUrl, auth: token });

// Create with only a title.
const created = await createTask({ body: { title: "Walk the dog" } });
// `response` is undefined only when the request never got one (network error).
assert.ok(created.response, "create: no response");
assert.equal(created.response.status, 201);
assert.ok(created.data, "create: no task");
const task: TaskOut = created.data;
// Always sent, so never undefined: string or null.
const description: string | null = task.description;
assert.equal(description, null);
assert.equal(created.response.headers.get("Location"), `/api/tasks/${task.id}`);
const id: number = task.id;

await createTask({ body: { title: "Feed the cat", description: null, completed: true } });

// List with every query parameter; the total is a header.
const listed = await listTasks({
  query: {
    status: "pending",
    completed: false,
    q: "DOG",
    sort: "title",
    order: "asc",
    limit: 10,
    offset: 0,
  },
});
assert.ok(listed.data, "list: no array");
assert.deepEqual(
  listed.data.map((t) => t.title),
  ["Walk the dog"],
);
assert.ok(listed.response, "list: no response");
assert.equal(Number(listed.response.headers.get("X-Total-Count")), 1);

// Get.
const got = await getTask({ path: { id } });
assert.equal(got.data?.title, "Walk the dog");

// Update: clear the description with null.
const updated = await updateTask({ path: { id }, body: { description: null, title: "Walk the dogs" } });
assert.equal(updated.data?.description, null);
assert.equal(updated.data?.title, "Walk the dogs");

// Toggle with no body.
const toggled = await completeTask({ path: { id } });
assert.equal(toggled.data?.completed, true);

// Delete.
const deleted = await deleteTask({ path: { id } });
assert.deepEqual(deleted.data, { id, deleted: true });

// Typed errors: the code is a union to narrow on.
const gone = await getTask({ path: { id } });
assert.equal(gone.data, undefined);
assert.ok(gone.error, "get after delete: no error");
if (gone.error.code === "not_found") {
  assert.equal(gone.response?.status, 404);
  assert.equal(messageFor(gone.error.code), "This task no longer exists.");
} else {
  assert.fail(`expected not_found, got ${gone.error.code}`);
}

const invalid = await createTask({ body: { title: "   " } });
assert.equal(invalid.error?.code, "validation_error");
assert.deepEqual(
  invalid.error?.errors?.map((e) => e.field),
  ["title"],
);

const refused = await listTasks({ auth: "not-a-jwt" });
assert.equal(refused.response?.status, 401);
assert.equal(refused.error?.code, "invalid_token");

const anonymous = createClient(createConfig({ baseUrl }));
const unauthenticated = await listTasks({ client: anonymous });
assert.equal(unauthenticated.error?.code, "not_authenticated");

const probe = await health({ client: anonymous });
assert.equal(probe.data?.status, "ok");

console.log("hey-api: ok");
