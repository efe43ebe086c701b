// A page's bearer token and its same-origin API calls. The token is given once per browser session (a form, or the
// URL fragment #token=..., which is never sent to the server) and kept in sessionStorage; it leaves this tab only
// in the Authorization header of same-origin calls.
"use strict";

const session = {
  key: "activealign-token",
  token: "",

  // The token from the URL fragment (then removed from the address bar) or from this browser session.
  restore() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    session.token = fragment.get("token") || sessionStorage.getItem(session.key) || "";
    if (fragment.has("token")) history.replaceState(null, "", location.pathname);
    return session.token;
  },

  keep() { sessionStorage.setItem(session.key, session.token); },
  forget() { sessionStorage.removeItem(session.key); session.token = ""; },

  // JSON of a same-origin API call; an error names the status and the service's `detail`.
  async api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Authorization": `Bearer ${session.token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${response.status}: ${data.detail || response.statusText}`);
    return data;
  },
};
