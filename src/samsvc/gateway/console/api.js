// The public REST API, as any client calls it: JSON bodies, the API key as a bearer header
// (kept in this tab's session storage), errors as google.rpc.Status bodies, job streams as
// newline-delimited JSON.

const KEY = "samsvc.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const reason = (body?.details || []).find((d) => d.reason)?.reason || "";
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.reason = reason;
    this.violations = (body?.details || []).flatMap((d) => d.field_violations || []);
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(json) {
  const out = {};
  if (json) out["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, body);
}

export async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Each JSON line of a job stream, as it arrives; resolves when the stream ends.
export async function stream(method, path, body, onEvent, signal) {
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) onEvent(unwrap(JSON.parse(line)));
    }
  }
  if (buffered.trim()) onEvent(unwrap(JSON.parse(buffered)));
}

// Envoy may wrap a streamed message as {"result": ...}, or an error as {"error": ...}.
function unwrap(message) {
  if (message.error && !message.cursor) throw new ApiError(500, message.error);
  return message.result || message;
}

export async function fileBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
