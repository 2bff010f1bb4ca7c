// Small helpers shared by the namespaces.

/** A copy of `opts` with camelCase keys in snake_case and undefined values dropped. */
export function snake(opts = {}) {
  const out = {};
  for (const [k, v] of Object.entries(opts)) {
    if (v === undefined) continue;
    out[k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())] = v;
  }
  return out;
}
