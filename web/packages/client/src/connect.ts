/**
 * Finding the server and picking a carrier. `GET /voq/config.json` (docs/PROTOCOL.md,
 * "Discovery and certificates") says where WebTransport is and which certificate hash to pin;
 * WebTransport gets a head start, and if it is missing, fails, or has not connected within the
 * head start, WebSocket is dialed in parallel: whichever connects first is used, the other is
 * closed.
 */

import { fromHex } from './bytes.js';
import { CertificateError, ProtocolError, UnreachableError, UnsupportedError, VoqError } from './errors.js';
import type { Transport, TransportName } from './transport.js';
import { connectWebSocket } from './websocket.js';
import { connectWebTransport, webTransportAvailable } from './webtransport.js';

export type TransportChoice = 'auto' | TransportName;

/** `/voq/config.json`. */
export interface VoqServerConfig {
  version?: string;
  webtransport?: {
    url: string;
    certificate_hashes?: Array<{ algorithm: string; value: string }>;
  };
  websocket?: { path?: string; tls?: boolean };
}

export interface ConnectOptions {
  /** The server's HTTP(S) base URL (default: the page's origin). */
  url?: string;
  /** `auto` (default): WebTransport with a WebSocket fallback. */
  transport?: TransportChoice;
  /** How long WebTransport may try alone before WebSocket starts in parallel (default 300 ms). */
  headStartMs?: number;
  /** Give up on a carrier after this long (default 10 s). */
  timeoutMs?: number;
  /** Use this instead of fetching `/voq/config.json`. */
  config?: VoqServerConfig;
  /**
   * The session token for a server with authentication on (docs/PROTOCOL.md, "Authentication"),
   * or a function that fetches a fresh one from the app's backend (called for every dial, so a
   * reconnect presents a token that has not expired). Sent as `?token=` on the WebTransport and
   * WebSocket URLs: browsers cannot set headers on either.
   */
  token?: string | (() => string | Promise<string>);
  signal?: AbortSignal;
  /** Test hooks. */
  fetch?: typeof fetch;
  dialWebTransport?: (url: string, hashes: Uint8Array[], signal: AbortSignal) => Promise<Transport>;
  dialWebSocket?: (url: string, signal: AbortSignal) => Promise<Transport>;
  hasWebTransport?: boolean;
  now?: () => number;
}

/** How one carrier fared in {@link connect}. */
export interface Attempt {
  transport: TransportName;
  /** ms after the race began; `null` if it never started. */
  startedMs: number | null;
  /** ms after the race began when it connected or failed. */
  endedMs?: number;
  result: 'won' | 'lost' | 'failed' | 'cancelled' | 'not_started' | 'unavailable';
  error?: string;
}

export interface Connected {
  transport: Transport;
  config: VoqServerConfig;
  winner: TransportName;
  attempts: Attempt[];
  /** ms from the start of `connect` (config fetch included) to the winner being ready. */
  connectMs: number;
}

function baseUrl(url: string | undefined): URL {
  if (url) return new URL(url, (globalThis as { location?: Location }).location?.href);
  const loc = (globalThis as { location?: Location }).location;
  if (!loc) throw new VoqError('invalid_state', 'no server URL given and no page origin to default to');
  return new URL(loc.origin);
}

/** Fetches `/voq/config.json` from `base`. */
export async function fetchServerConfig(base: URL, opts: { fetch?: typeof fetch; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<VoqServerConfig> {
  const f = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const url = new URL('/voq/config.json', base);
  const ac = new AbortController();
  const timeoutMs = opts.timeoutMs ?? 10000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, timeoutMs);
  opts.signal?.addEventListener('abort', () => ac.abort());
  let res: Response;
  try {
    res = await f(url.href, { cache: 'no-store', signal: ac.signal });
  } catch (e) {
    const why = timedOut ? `no answer within ${timeoutMs / 1000} s` : (e as Error).message;
    throw new UnreachableError(`cannot reach the voq server at ${base.origin}: GET /voq/config.json failed (${why})`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) {
    throw new UnreachableError(`${base.origin} does not look like a voq server: GET /voq/config.json answered HTTP ${res.status}`);
  }
  try {
    return (await res.json()) as VoqServerConfig;
  } catch (e) {
    throw new ProtocolError(`${url.href} is not JSON: ${(e as Error).message}`);
  }
}

/** The certificate hashes of a config as bytes (throws a {@link CertificateError} on bad hex). */
export function certificateHashes(config: VoqServerConfig): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const h of config.webtransport?.certificate_hashes ?? []) {
    if (h.algorithm !== 'sha-256') continue;
    const bytes = fromHex(h.value);
    if (!bytes || bytes.length !== 32) {
      throw new CertificateError(`the server published a malformed sha-256 certificate hash: "${h.value}"`);
    }
    out.push(bytes);
  }
  return out;
}

/** The WebSocket URL of a config, relative to `base` (ws:// for http://, wss:// for https://). */
export function webSocketUrl(base: URL, config: VoqServerConfig): string {
  const u = new URL(config.websocket?.path ?? '/voq', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

/** `url` with `?token=` set, when there is a token. */
export function withToken(url: string, token: string | undefined): string {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set('token', token);
  return u.href;
}

/** One carrier to dial. */
export interface Dial {
  name: TransportName;
  dial(signal: AbortSignal): Promise<Transport>;
}

/**
 * Races `primary` against `fallback`: the fallback starts after `headStartMs`, or at once when
 * the primary fails. First to connect wins; the loser is cancelled, or closed if it connects
 * anyway. Rejects with every failure when both fail.
 */
export function raceTransports(
  primary: Dial | null,
  fallback: Dial | null,
  headStartMs: number,
  now: () => number = () => performance.now(),
): Promise<{ transport: Transport; winner: TransportName; attempts: Attempt[]; errors: unknown[] }> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const dials = [primary, fallback].filter((d): d is Dial => d !== null);
    const attempts: Attempt[] = dials.map((d) => ({ transport: d.name, startedMs: null, result: 'not_started' }));
    const controllers: Array<AbortController | null> = dials.map(() => null);
    const errors: unknown[] = [];
    let won = false;
    let running = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (dials.length === 0) {
      reject(new UnsupportedError('no transport to try'));
      return;
    }
    const maybeFail = () => {
      if (won || running > 0) return;
      if (attempts.some((a) => a.result === 'not_started')) return;
      reject(Object.assign(new Error('every transport failed'), { errors, attempts }));
    };
    const start = (i: number) => {
      const d = dials[i];
      const a = attempts[i];
      if (!d || !a || a.result !== 'not_started' || won) return;
      const ac = new AbortController();
      controllers[i] = ac;
      a.startedMs = Math.round(now() - t0);
      a.result = 'cancelled';
      running += 1;
      d.dial(ac.signal).then(
        (t) => {
          running -= 1;
          a.endedMs = Math.round(now() - t0);
          if (won) {
            a.result = 'lost';
            t.close(0, 'another transport connected first');
            return;
          }
          won = true;
          a.result = 'won';
          clearTimeout(timer);
          controllers.forEach((c, j) => {
            if (j !== i) c?.abort();
          });
          resolve({ transport: t, winner: d.name, attempts, errors });
        },
        (e: unknown) => {
          running -= 1;
          if (won) return; // cancelled loser
          a.endedMs = Math.round(now() - t0);
          a.result = 'failed';
          a.error = (e as Error)?.message ?? String(e);
          errors.push(e);
          if (i === 0) {
            clearTimeout(timer);
            start(1);
          }
          maybeFail();
        },
      );
    };
    start(0);
    if (dials.length > 1) timer = setTimeout(() => start(1), Math.max(0, headStartMs));
  });
}

/** Finds the server, dials a carrier (see {@link ConnectOptions.transport}) and resolves when it is ready. */
export async function connect(opts: ConnectOptions = {}): Promise<Connected> {
  const now = opts.now ?? (() => performance.now());
  const t0 = now();
  const base = baseUrl(opts.url);
  const choice = opts.transport ?? 'auto';
  const timeoutMs = opts.timeoutMs ?? 10000;
  const fetchOpts: { fetch?: typeof fetch; timeoutMs: number; signal?: AbortSignal } = { timeoutMs };
  if (opts.fetch) fetchOpts.fetch = opts.fetch;
  if (opts.signal) fetchOpts.signal = opts.signal;
  const config = opts.config ?? (await fetchServerConfig(base, fetchOpts));
  const hasWt = opts.hasWebTransport ?? webTransportAvailable();
  const token = typeof opts.token === 'function' ? await opts.token() : opts.token;
  const wtUrl = config.webtransport?.url && withToken(config.webtransport.url, token);
  const hashes = certificateHashes(config);
  const wsUrl = withToken(webSocketUrl(base, config), token);

  const dialWt =
    opts.dialWebTransport ??
    ((url: string, h: Uint8Array[], signal: AbortSignal) => connectWebTransport(url, { certificateHashes: h, signal, timeoutMs }));
  const dialWs = opts.dialWebSocket ?? ((url: string, signal: AbortSignal) => connectWebSocket(url, { signal, timeoutMs }));

  const wt: Dial | null = hasWt && wtUrl ? { name: 'webtransport', dial: (s) => dialWt(wtUrl, hashes, s) } : null;
  const ws: Dial = { name: 'websocket', dial: (s) => dialWs(wsUrl, s) };

  if (choice === 'webtransport' && !wt) {
    throw new UnsupportedError(
      hasWt ? `the server at ${base.origin} does not offer WebTransport` : 'this browser has no WebTransport (use transport "websocket" or "auto")',
    );
  }
  const primary = choice === 'websocket' ? null : wt;
  const fallback = choice === 'webtransport' ? null : ws;
  const unavailable: Attempt[] = choice === 'auto' && !wt ? [{ transport: 'webtransport', startedMs: null, result: 'unavailable', error: hasWt ? 'the server offers no WebTransport' : 'no WebTransport in this browser' }] : [];
  try {
    const r = await raceTransports(primary, fallback, opts.headStartMs ?? 300, now);
    return { transport: r.transport, config, winner: r.winner, attempts: [...unavailable, ...r.attempts], connectMs: Math.round(now() - t0) };
  } catch (e) {
    const attempts = ((e as { attempts?: Attempt[] }).attempts ?? []).concat(unavailable);
    const detail = attempts
      .filter((a) => a.error)
      .map((a) => `${a.transport}: ${a.error}`)
      .join('; ');
    if (e instanceof VoqError) throw e;
    // Only WebTransport was tried and it failed: is the server up at all? If its TCP side
    // answers, the QUIC handshake is what failed — a certificate the browser refused (a
    // restarted server has a new one), or UDP blocked on the way.
    if (primary && !fallback) {
      const f = opts.fetch ?? globalThis.fetch.bind(globalThis);
      const up = await f(new URL('/healthz', base).href, { cache: 'no-store' }).then(
        (r) => r.ok,
        () => false,
      );
      if (up) {
        throw new CertificateError(
          `the server at ${base.origin} is up, but the WebTransport handshake with ${wtUrl} failed (${detail}): most likely its certificate does not match the pinned hash (reload the page after a server restart) or UDP is blocked; transport "websocket" or "auto" avoids it`,
          { cause: e },
        );
      }
    }
    throw new UnreachableError(`cannot connect to the voq server at ${base.origin}: ${detail || (e as Error).message}`, { cause: e });
  }
}
