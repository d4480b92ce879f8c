// The one door to the daemon: the public /1.0 API with the session cookie.
// Changes echo the vf_csrf cookie in X-CSRF-Token; errors become ApiError
// (code + message from the API's one error shape, never a stack trace).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.message} [${this.code}]`;
  }
}

export function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("vf_csrf="));
  return found ? decodeURIComponent(found.slice("vf_csrf=".length)) : "";
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "network", `cannot reach the virtfleet daemon (${err.message})`);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    if (response.status === 401 && !["/1.0/login", "/1.0/whoami"].includes(path)) {
      window.dispatchEvent(new CustomEvent("vf:unauthenticated"));
    }
    const error = data && data.error;
    if (error) throw new ApiError(response.status, error.code, error.message);
    throw new ApiError(response.status, `http_${response.status}`, `request failed (HTTP ${response.status})`);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body ?? {});
export const put = (path, body) => request("PUT", path, body ?? {});
export const del = (path) => request("DELETE", path);

export const enc = encodeURIComponent;

// The absolute ws:// or wss:// URL of an API websocket path on this origin.
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

// Session ------------------------------------------------------------------
export const whoami = () => get("/1.0/whoami");
export const login = (username, password) => post("/1.0/login", { username, password });
export const logout = () => post("/1.0/logout");

// Instances ----------------------------------------------------------------
export const listInstances = () => get("/1.0/instances");
export const getInstance = (name) => get(`/1.0/instances/${enc(name)}`);
export const createInstance = (spec) => post("/1.0/instances", spec);
export const changeState = (name, action, force = false) =>
  put(`/1.0/instances/${enc(name)}/state`, { action, force });
export const deleteInstance = (name, { force = true, disks = true } = {}) =>
  del(`/1.0/instances/${enc(name)}?force=${force}&disks=${disks}`);
export const vncTicket = (name) => post(`/1.0/instances/${enc(name)}/console/vnc-ticket`);
export const screenshotUrl = (name) => `/1.0/instances/${enc(name)}/screenshot?t=${Date.now()}`;

// Hosts, images, operations, events -----------------------------------------
export const getHost = () => get("/1.0/host");
export const listHosts = () => get("/1.0/hosts");
export const hostRecord = (idOrName) => get(`/1.0/hosts/${enc(idOrName)}`);
export const clusterStatus = () => get("/1.0/cluster");
export const checkHost = () => get("/1.0/host/check");
export const listImages = () => get("/1.0/images");
export const listOperations = () => get("/1.0/operations");
export const listEvents = (limit = 100) => get(`/1.0/events?limit=${limit}`);

// Networks -------------------------------------------------------------------
export const listNetworks = () => get("/1.0/networks");
export const createNetwork = (spec) => post("/1.0/networks", spec);
export const deleteNetwork = (name) => del(`/1.0/networks/${enc(name)}`);
