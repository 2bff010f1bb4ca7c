// Reconnect delays: exponential backoff with full jitter. Attempt n waits a
// uniform random time in [0, min(cap, base * 2^n)], so that many clients
// dropped at once do not come back in step.

export class Backoff {
  constructor({ baseMs = 100, capMs = 10_000, random = Math.random } = {}) {
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The delay before the next attempt, in ms; each call doubles the ceiling. */
  next() {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(1, Math.floor(this.random() * ceiling));
  }

  reset() {
    this.attempt = 0;
  }
}
