// The public API, as any client calls it: a bearer token from POST /api/v1/auth/token (kept in
// sessionStorage, so it ends with the tab), Accept-Language from the user's choice, problem+json errors.
import { language } from "./i18n.js";

const ACCESS = "registry.access_token";
const REFRESH = "registry.refresh_token";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || null;
    this.code = (problem && problem.code) || null;
  }
}

export function signedIn() {
  return Boolean(sessionStorage.getItem(ACCESS));
}

export function forget() {
  sessionStorage.removeItem(ACCESS);
  sessionStorage.removeItem(REFRESH);
}

function remember(tokens) {
  sessionStorage.setItem(ACCESS, tokens.access_token);
  sessionStorage.setItem(REFRESH, tokens.refresh_token);
}

/** A fresh Idempotency-Key for one user action (repeated sends of the same action reuse it). */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function send(method, path, { body, key, query } = {}) {
  const headers = { Accept: "application/json, application/problem+json", "Accept-Language": language() };
  const token = sessionStorage.getItem(ACCESS);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(name, value);
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                      credentials: "omit", cache: "no-store" });
}

async function refreshTokens() {
  const refresh = sessionStorage.getItem(REFRESH);
  if (!refresh) return false;
  const answer = await fetch("/api/v1/auth/refresh", {
    method: "POST", credentials: "omit",
    headers: { "Content-Type": "application/json", "Accept-Language": language() },
    body: JSON.stringify({ refresh_token: refresh }),
  });
  if (!answer.ok) return false;
  remember(await answer.json());
  return true;
}

async function parse(answer) {
  if (answer.status === 204) return null;
  const text = await answer.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Calls the API; resolves to the parsed body, or throws ApiError (problem+json) / TypeError (network). */
export async function api(method, path, options = {}) {
  let answer = await send(method, path, options);
  if (answer.status === 401 && sessionStorage.getItem(ACCESS) && (await refreshTokens())) {
    answer = await send(method, path, options);
  }
  const body = await parse(answer);
  if (!answer.ok) throw new ApiError(answer.status, body);
  return body;
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body = {}, key = undefined) => api("POST", path, { body, key });

export async function signIn(username, password) {
  forget();
  const tokens = await api("POST", "/api/v1/auth/token", { body: { username, password } });
  remember(tokens);
  return get("/api/v1/users/me");
}

/** Fetches a file the API renders (CSV, PDF...) with the user's token and hands it to the browser. */
export async function download(path, query, filename) {
  let answer = await send("GET", path, { query });
  if (answer.status === 401 && (await refreshTokens())) answer = await send("GET", path, { query });
  if (!answer.ok) throw new ApiError(answer.status, await parse(answer));
  const url = URL.createObjectURL(await answer.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
