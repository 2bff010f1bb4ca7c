// Client-side NATS subject matching: `*` matches one token, a last `>` one
// or more. Used to hand a bus.message to every local handler it matches.

/** Whether `subject` (no wildcards) matches `pattern`. */
export function subjectMatches(pattern, subject) {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
