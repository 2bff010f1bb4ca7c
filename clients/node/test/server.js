// Test helper: runs the real server (target/release/switchyard with the
// installed modules/rpc.so) on a free loopback port with a temporary data
// dir, and can restart it on the same port and data.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, writeFileSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.SWITCHYARD_BIN ?? path.join(ROOT, 'target/release/switchyard');
export const RPC_SO = process.env.SWITCHYARD_RPC_SO ?? path.join(ROOT, 'modules/rpc.so');

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export class TestServer {
  static async start() {
    for (const f of [BIN, RPC_SO]) {
      if (!existsSync(f)) throw new Error(`${f} is missing: run \`make build\` first`);
    }
    const s = new TestServer();
    s.dir = mkdtempSync(path.join(tmpdir(), 'sy-node-'));
    mkdirSync(path.join(s.dir, 'modules'));
    mkdirSync(path.join(s.dir, 'data'));
    copyFileSync(RPC_SO, path.join(s.dir, 'modules/rpc.so'));
    // TLS on the same port as plaintext, when openssl can make the pairs:
    // a self-signed server certificate (its own CA) and a client certificate.
    let tlsToml = '';
    const tlsDir = path.join(s.dir, 'tls');
    const gen = (...args) => spawnSync(path.join(ROOT, 'scripts/tls-cert.sh'), args, { stdio: 'ignore' }).status === 0;
    if (gen(tlsDir, 'localhost', '127.0.0.1') && gen('--client', 'bot1', tlsDir)) {
      s.tls = { dir: tlsDir, ca: path.join(tlsDir, 'cert.pem'), cert: path.join(tlsDir, 'clients/bot1.pem'), key: path.join(tlsDir, 'clients/bot1.key') };
      tlsToml = '\n[server.tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\nclient_ca = "tls/client-ca.pem"\nclient_auth = "required"\n';
    }
    // purge_interval_ms: expiry events come within 50 ms.
    writeFileSync(path.join(s.dir, 'switchyard.toml'), `[server]\n${tlsToml}\n[modules.rpc]\npurge_interval_ms = 50\n`);
    s.port = await freePort();
    await s.spawn();
    return s;
  }

  spawn() {
    const args = ['-port', String(this.port), '--bind', '127.0.0.1', '-threads', '2',
      '--modules', path.join(this.dir, 'modules'), '--data-dir', path.join(this.dir, 'data'),
      '--config', path.join(this.dir, 'switchyard.toml')];
    this.child = spawn(BIN, args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = [];
    this.log = log;
    this.child.stderr.on('data', (d) => { log.push(d.toString()); if (log.length > 200) log.shift(); });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start in 10 s:\n${log.join('')}`)), 10_000);
      let out = '';
      this.child.stdout.on('data', (d) => {
        out += d;
        if (out.includes('listening on ')) {
          clearTimeout(timer);
          resolve(this);
        }
      });
      this.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code}) before listening:\n${log.join('')}`));
      });
    });
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => { clearTimeout(kill); resolve(); });
      child.kill('SIGTERM');
    });
  }

  /** Stops and starts again on the same port and data dir. */
  async restart() {
    await this.stop();
    // The port may linger a moment; retry the start a few times.
    for (let i = 0; ; i++) {
      try {
        await this.spawn();
        return;
      } catch (err) {
        if (i >= 4) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async close() {
    await this.stop();
    if (!process.env.KEEP_TEST_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }
}
