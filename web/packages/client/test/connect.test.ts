import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { certificateHashes, connect, raceTransports, webSocketUrl } from '../src/connect.js';
import type { Dial } from '../src/connect.js';
import { CertificateError, UnreachableError, UnsupportedError } from '../src/errors.js';
import type { Transport } from '../src/transport.js';
import { FakeTransport } from './fakes.js';

/** A dial that connects (or fails) after `ms` of fake time; records whether it started and was aborted. */
function dial(name: 'webtransport' | 'websocket', ms: number, fail?: string) {
  const d = {
    started: false,
    aborted: false,
    transport: new FakeTransport(name),
    dial: null as unknown as Dial['dial'],
  };
  d.dial = (signal: AbortSignal) => {
    d.started = true;
    signal.addEventListener('abort', () => (d.aborted = true));
    return new Promise<Transport>((resolve, reject) => {
      setTimeout(() => (fail ? reject(new Error(fail)) : resolve(d.transport)), ms);
    });
  };
  return { ...d, asDial: { name, dial: (s: AbortSignal) => d.dial(s) } as Dial, get state() { return d; } };
}

describe('raceTransports', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());
  const now = () => Date.now();

  it('WebTransport within its head start: WebSocket is never dialed', async () => {
    const wt = dial('webtransport', 120);
    const ws = dial('websocket', 10);
    const p = raceTransports(wt.asDial, ws.asDial, 300, now);
    await vi.advanceTimersByTimeAsync(500);
    const r = await p;
    expect(r.winner).toBe('webtransport');
    expect(ws.state.started).toBe(false);
    expect(r.attempts.map((a) => a.result)).toEqual(['won', 'not_started']);
  });

  it('slow WebTransport: WebSocket starts at the head start and wins; the loser is closed', async () => {
    const wt = dial('webtransport', 1000);
    const ws = dial('websocket', 50);
    const p = raceTransports(wt.asDial, ws.asDial, 300, now);
    await vi.advanceTimersByTimeAsync(299);
    expect(ws.state.started).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(ws.state.started).toBe(true);
    await vi.advanceTimersByTimeAsync(50);
    const r = await p;
    expect(r.winner).toBe('websocket');
    expect(r.attempts[1]).toMatchObject({ transport: 'websocket', startedMs: 300, endedMs: 350, result: 'won' });
    expect(wt.state.aborted).toBe(true);
    // WebTransport connects later anyway: it is closed, not used.
    await vi.advanceTimersByTimeAsync(1000);
    expect(wt.state.transport.closedWith).not.toBeNull();
    expect(r.attempts[0]!.result).toBe('lost');
  });

  it('WebTransport fails early: WebSocket starts at once', async () => {
    const wt = dial('webtransport', 40, 'handshake failed');
    const ws = dial('websocket', 30);
    const p = raceTransports(wt.asDial, ws.asDial, 300, now);
    await vi.advanceTimersByTimeAsync(40);
    expect(ws.state.started).toBe(true);
    await vi.advanceTimersByTimeAsync(30);
    const r = await p;
    expect(r.winner).toBe('websocket');
    expect(r.attempts[0]).toMatchObject({ result: 'failed', error: 'handshake failed' });
    expect(r.attempts[1]).toMatchObject({ startedMs: 40, endedMs: 70 });
  });

  it('both fail: rejects with every error', async () => {
    const wt = dial('webtransport', 40, 'no udp');
    const ws = dial('websocket', 30, 'refused');
    const p = raceTransports(wt.asDial, ws.asDial, 300, now);
    const caught = p.then(
      () => null,
      (e: unknown) => e as { errors: Error[] },
    );
    await vi.advanceTimersByTimeAsync(100);
    const e = await caught;
    expect(e?.errors.map((x) => x.message)).toEqual(['no udp', 'refused']);
  });

  it('one carrier only', async () => {
    const ws = dial('websocket', 30);
    const p = raceTransports(null, ws.asDial, 300, now);
    await vi.advanceTimersByTimeAsync(30);
    expect((await p).winner).toBe('websocket');
    await expect(raceTransports(null, null, 300, now)).rejects.toBeInstanceOf(UnsupportedError);
  });
});

const CONFIG = {
  version: 'voq/1',
  webtransport: { url: 'https://127.0.0.1:4443/voq', certificate_hashes: [{ algorithm: 'sha-256', value: 'ab'.repeat(32) }] },
  websocket: { path: '/voq', tls: false },
};

function fakeFetch(routes: Record<string, unknown>): typeof fetch {
  return (async (url: string) => {
    const path = new URL(url).pathname;
    if (!(path in routes)) throw new TypeError('Failed to fetch');
    const body = routes[path];
    return { ok: true, status: 200, json: async () => body } as Response;
  }) as unknown as typeof fetch;
}

describe('connect', () => {
  it('reads the config, pins the certificate hash and prefers WebTransport', async () => {
    let seen: { url: string; hashes: Uint8Array[] } | null = null;
    const r = await connect({
      url: 'http://127.0.0.1:4443/',
      fetch: fakeFetch({ '/voq/config.json': CONFIG }),
      hasWebTransport: true,
      dialWebTransport: async (url, hashes) => {
        seen = { url, hashes };
        return new FakeTransport('webtransport');
      },
      dialWebSocket: () => new Promise(() => {}),
    });
    expect(r.winner).toBe('webtransport');
    expect(seen!.url).toBe('https://127.0.0.1:4443/voq');
    expect(Array.from(seen!.hashes[0]!)).toEqual(new Array(32).fill(0xab));
  });

  it('falls back to WebSocket when the browser has no WebTransport', async () => {
    let wsUrl = '';
    const r = await connect({
      url: 'http://127.0.0.1:4443/',
      fetch: fakeFetch({ '/voq/config.json': CONFIG }),
      hasWebTransport: false,
      dialWebSocket: async (url) => {
        wsUrl = url;
        return new FakeTransport('websocket');
      },
    });
    expect(r.winner).toBe('websocket');
    expect(wsUrl).toBe('ws://127.0.0.1:4443/voq');
    expect(r.attempts[0]).toMatchObject({ transport: 'webtransport', result: 'unavailable' });
  });

  it('puts the token on both carriers\' URLs, fetching a fresh one for each dial', async () => {
    const urls: string[] = [];
    let minted = 0;
    const opts = {
      url: 'http://127.0.0.1:4443/',
      fetch: fakeFetch({ '/voq/config.json': CONFIG }),
      hasWebTransport: true,
      headStartMs: 0,
      token: async () => `tok.en-${++minted}`,
      dialWebTransport: async (url: string) => {
        urls.push(url);
        throw new Error('no QUIC here');
      },
      dialWebSocket: async (url: string) => {
        urls.push(url);
        return new FakeTransport('websocket');
      },
    };
    await connect(opts);
    await connect(opts);
    expect(urls).toEqual([
      'https://127.0.0.1:4443/voq?token=tok.en-1',
      'ws://127.0.0.1:4443/voq?token=tok.en-1',
      'https://127.0.0.1:4443/voq?token=tok.en-2',
      'ws://127.0.0.1:4443/voq?token=tok.en-2',
    ]);
  });

  it('says "unreachable" when nothing answers', async () => {
    await expect(connect({ url: 'http://127.0.0.1:9/', fetch: fakeFetch({}) })).rejects.toBeInstanceOf(UnreachableError);
  });

  it('says "certificate" when only the WebTransport handshake fails and the server is up', async () => {
    const opts = {
      url: 'http://127.0.0.1:4443/',
      transport: 'webtransport' as const,
      fetch: fakeFetch({ '/voq/config.json': CONFIG, '/healthz': 'ok' }),
      hasWebTransport: true,
      dialWebTransport: async () => {
        throw new Error('Opening handshake failed.');
      },
    };
    const e = await connect(opts).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CertificateError);
    expect((e as CertificateError).code).toBe('certificate');
  });

  it('rejects a malformed certificate hash', () => {
    expect(() => certificateHashes({ webtransport: { url: 'x', certificate_hashes: [{ algorithm: 'sha-256', value: 'zz' }] } })).toThrow(CertificateError);
  });

  it('derives ws:// and wss:// from the page', () => {
    expect(webSocketUrl(new URL('https://example.com:8443/app/'), {})).toBe('wss://example.com:8443/voq');
    expect(webSocketUrl(new URL('http://localhost:4443'), { websocket: { path: '/x' } })).toBe('ws://localhost:4443/x');
  });
});
