// openapi-typescript's types + openapi-fetch, used as a frontend would:
// every call of the API, against a real server, with no casts.

import assert from "node:assert/strict";
import createClient from "openapi-fetch";

import type { components, paths } from "../generated/openapi-typescript/schema.js";
import { args, messageFor } from "./check.js";

type Task = components["schemas"]["TaskOut"];

const { baseUrl, token } = args();
const api = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${token}` },
});

// Create with only a title.
const created = await api.POST("/api/tasks", { body: { title: "Buy milk" } });
assert.equal(created.response.status, 201);
assert.ok(created.data, "create: no task");
const task: Task = created.data;
// Always sent, so never undefined: string or null.
const description: string | null = task.description;
assert.equal(description, null);
assert.equal(task.title, "Buy milk");
assert.equal(task.completed, false);
assert.equal(created.response.headers.get("Location"), `/api/tasks/${task.id}`);
const id: number = task.id;

await api.POST("/api/tasks", {
  body: { title: "Buy bread", description: "wholemeal", completed: true },
});

// List with every query parameter; the total is a header.
const listed = await api.GET("/api/tasks", {
  params: {
    query: {
      status: "pending",
      completed: false,
      q: "MILK",
      sort: "title",
      order: "asc",
      limit: 10,
      offset: 0,
    },
  },
});
assert.ok(listed.data, "list: no array");
const titles: string[] = listed.data.map((t) => t.title);
assert.deepEqual(titles, ["Buy milk"]);
assert.equal(Number(listed.response.headers.get("X-Total-Count")), 1);

const all = await api.GET("/api/tasks");
assert.equal(all.data?.length, 2);
assert.equal(all.response.headers.get("X-Total-Count"), "2");

// Get.
const got = await api.GET("/api/tasks/{id}", { params: { path: { id } } });
assert.equal(got.data?.id, id);

// Update: set a description, then clear it with null.
const described = await api.PUT("/api/tasks/{id}", {
  params: { path: { id } },
  body: { description: "2 litres" },
});
assert.equal(described.data?.description, "2 litres");
const cleared = await api.PUT("/api/tasks/{id}", {
  params: { path: { id } },
  body: { description: null },
});
assert.ok(cleared.data, "update: no task");
assert.equal(cleared.data.description, null);

// Toggle with no body, then set explicitly.
const toggled = await api.PATCH("/api/tasks/{id}/complete", { params: { path: { id } } });
assert.equal(toggled.data?.completed, true);
const reset = await api.PATCH("/api/tasks/{id}/complete", {
  params: { path: { id } },
  body: { completed: false },
});
assert.equal(reset.data?.completed, false);

// Delete.
const deleted = await api.DELETE("/api/tasks/{id}", { params: { path: { id } } });
assert.deepEqual(deleted.data, { id, deleted: true });

// Typed errors: the code is a union to narrow on.
const gone = await api.GET("/api/tasks/{id}", { params: { path: { id } } });
assert.equal(gone.data, undefined);
assert.ok(gone.error, "get after delete: no error");
if (gone.error.code === "not_found") {
  assert.equal(gone.response.status, 404);
  assert.equal(messageFor(gone.error.code), "This task no longer exists.");
} else {
  assert.fail(`expected not_found, got ${gone.error.code}`);
}

const invalid = await api.GET("/api/tasks", { params: { query: { limit: 0 } } });
assert.equal(invalid.error?.code, "validation_error");
assert.deepEqual(
  invalid.error?.errors?.map((e) => e.field),
  ["limit"],
);

const anonymous = createClient<paths>({ baseUrl });
const refused = await anonymous.GET("/api/tasks");
assert.equal(refused.response.status, 401);
assert.equal(refused.error?.code, "not_authenticated");

const health = await anonymous.GET("/health");
assert.equal(health.data?.status, "ok");

console.log("openapi-fetch: ok");
