// What both programs share: the arguments, and one exhaustive switch over
// the API's error codes (it stops compiling when the `code` union of a
// generated client gains, loses or widens a member, e.g. to `string`).

import type { components } from "../generated/openapi-typescript/schema.js";

export type ErrorCode = components["schemas"]["ErrorCode"];

/** `<base URL> <bearer token>` from the command line. */
export function args(): { baseUrl: string; token: string } {
  const [baseUrl, token] = process.argv.slice(2);
  if (baseUrl === undefined || token === undefined) {
    console.error("usage: node <program>.js <base URL> <bearer token>");
    process.exit(2);
  }
  return { baseUrl, token };
}

/** What a frontend might show for each error code. */
export function messageFor(code: ErrorCode): string {
  switch (code) {
    case "invalid_json":
      return "The request was malformed.";
    case "not_authenticated":
    case "invalid_token":
      return "Please sign in again.";
    case "not_found":
      return "This task no longer exists.";
    case "method_not_allowed":
      return "That action is not supported.";
    case "request_timeout":
      return "The request took too long; please try again.";
    case "idempotency_conflict":
      return "This request is already being processed.";
    case "task_limit_reached":
      return "You have reached the maximum number of tasks.";
    case "payload_too_large":
      return "That is too much text.";
    case "unsupported_media_type":
      return "The request was malformed.";
    case "validation_error":
      return "Please check the highlighted fields.";
    case "too_many_requests":
      return "Too many requests; please slow down.";
    case "internal_error":
      return "Something went wrong on our side.";
    case "service_unavailable":
      return "The service is briefly unavailable; please retry.";
    case "precondition_failed":
      return "This task was changed elsewhere; showing its latest version.";
    case "precondition_required":
      return "Please reload this task before changing it.";
    case "cursor_expired":
      return "Reloading your list.";
    default: {
      const unknown: never = code;
      return unknown;
    }
  }
}
