/**
 * voq/1 over WebTransport (HTTP/3): native QUIC streams in the browser. Stream error codes are
 * the voq codes; the browser and the server map them into the HTTP/3 range on the wire.
 */

import { Code } from './errors.js';
import type { CloseInfo, RecvStream, SendStream, Transport } from './transport.js';

/** The WebTransport constructor, when the browser has one. */
export function webTransportAvailable(): boolean {
  return typeof (globalThis as { WebTransport?: unknown }).WebTransport === 'function';
}

function wtError(message: string, code: number): unknown {
  const Ctor = (globalThis as { WebTransportError?: typeof WebTransportError }).WebTransportError;
  if (typeof Ctor === 'function') {
    try {
      return new Ctor(message, { streamErrorCode: code });
    } catch {
      // fall through
    }
  }
  const e = new Error(message) as Error & { streamErrorCode: number };
  e.streamErrorCode = code;
  return e;
}

/** The stream error code of a rejection from a WebTransport stream, if it carries one. */
export function streamErrorCode(e: unknown): number | null {
  const c = (e as { streamErrorCode?: unknown } | null)?.streamErrorCode;
  return typeof c === 'number' ? c : null;
}

class WtSend implements SendStream {
  onStop: ((code: number) => void) | null = null;
  private writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  private queue: Array<['w', Uint8Array] | ['fin'] | ['reset', number]> = [];
  private done = false;
  private failed = false;

  constructor(stream: Promise<WritableStream<Uint8Array>>) {
    stream.then(
      (s) => {
        const w = s.getWriter();
        this.writer = w;
        w.closed.catch((e) => this.stopped(e));
        const q = this.queue;
        this.queue = [];
        for (const op of q) this.apply(op);
      },
      () => {
        this.failed = true;
      },
    );
  }

  write(bytes: Uint8Array): void {
    if (!this.done) this.enqueue(['w', bytes]);
  }
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.enqueue(['fin']);
  }
  reset(code: number): void {
    if (this.done) return;
    this.done = true;
    this.enqueue(['reset', code]);
  }

  private enqueue(op: ['w', Uint8Array] | ['fin'] | ['reset', number]): void {
    if (this.failed) return;
    if (this.writer) this.apply(op);
    else this.queue.push(op);
  }

  private apply(op: ['w', Uint8Array] | ['fin'] | ['reset', number]): void {
    const w = this.writer;
    if (!w) return;
    // Not awaited: the writer queues in order; rejections surface through `closed`.
    if (op[0] === 'w') w.write(op[1]).catch(() => {});
    else if (op[0] === 'fin') w.close().catch(() => {});
    else w.abort(wtError('voq reset', op[1])).catch(() => {});
  }

  private stopped(e: unknown): void {
    const code = streamErrorCode(e);
    this.done = true;
    if (code !== null) this.onStop?.(code);
  }
}

class WtRecv implements RecvStream {
  onData: ((bytes: Uint8Array) => void) | null = null;
  onFin: (() => void) | null = null;
  onReset: ((code: number) => void) | null = null;
  private reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  private stopCode: number | null = null;

  constructor(
    readonly id: number,
    stream: ReadableStream<Uint8Array> | Promise<ReadableStream<Uint8Array>>,
  ) {
    // Start reading after the caller has set the callbacks.
    Promise.resolve(stream).then(
      (s) => {
        this.reader = s.getReader();
        if (this.stopCode !== null) this.cancel(this.stopCode);
        else void this.pump();
      },
      () => {},
    );
  }

  stop(code: number): void {
    if (this.stopCode !== null) return;
    this.stopCode = code;
    if (this.reader) this.cancel(code);
  }

  private cancel(code: number): void {
    this.reader?.cancel(wtError('voq stop', code)).catch(() => {});
  }

  private async pump(): Promise<void> {
    const reader = this.reader;
    if (!reader) return;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.stopCode !== null) return;
        if (done) {
          this.onFin?.();
          return;
        }
        if (value && value.length) this.onData?.(value);
      }
    } catch (e) {
      if (this.stopCode !== null) return;
      const code = streamErrorCode(e);
      // Without a code the whole connection went away; the transport's `closed` says why.
      if (code !== null) this.onReset?.(code);
    }
  }
}

export interface WebTransportConnectOptions {
  /** SHA-256 hashes of the server's certificate to pin (development certificates). */
  certificateHashes?: Uint8Array[];
  signal?: AbortSignal;
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
}

export class WebTransportTransport implements Transport {
  readonly name = 'webtransport' as const;
  onIncomingUni: ((stream: RecvStream) => void) | null = null;
  readonly closed: Promise<CloseInfo>;
  private nextRecvId = 1;
  private rtt: number | null = null;
  private statsTimer: ReturnType<typeof setInterval> | null = null;
  private closingLocally = false;

  constructor(private readonly wt: WebTransport) {
    this.closed = wt.closed.then(
      (info) => ({
        code: info?.closeCode ?? null,
        reason: info?.reason || 'WebTransport session closed',
        local: this.closingLocally,
      }),
      (e: unknown) => ({
        code: null,
        reason: `WebTransport connection lost: ${(e as Error)?.message ?? String(e)}`,
        local: this.closingLocally,
      }),
    );
    void this.closed.then(() => {
      if (this.statsTimer) clearInterval(this.statsTimer);
    });
    void this.acceptLoop();
    const getStats = (wt as unknown as { getStats?: () => Promise<{ smoothedRtt?: number }> }).getStats;
    if (typeof getStats === 'function') {
      const poll = () =>
        getStats
          .call(wt)
          .then((s) => {
            if (typeof s?.smoothedRtt === 'number' && s.smoothedRtt > 0) this.rtt = s.smoothedRtt;
          })
          .catch(() => {});
      void poll();
      this.statsTimer = setInterval(poll, 1000);
    }
  }

  openBidi(): { send: SendStream; recv: RecvStream } {
    const bidi = this.wt.createBidirectionalStream();
    const send = new WtSend(bidi.then((b) => b.writable as WritableStream<Uint8Array>));
    const recv = new WtRecv(0, bidi.then((b) => b.readable as ReadableStream<Uint8Array>));
    return { send, recv };
  }

  openUni(): SendStream {
    return new WtSend(this.wt.createUnidirectionalStream() as Promise<WritableStream<Uint8Array>>);
  }

  rttMs(): number | null {
    return this.rtt;
  }

  close(code: number = Code.NoError, reason = ''): void {
    this.closingLocally = true;
    try {
      this.wt.close({ closeCode: code, reason: reason.slice(0, 120) });
    } catch {
      // already closed
    }
  }

  private async acceptLoop(): Promise<void> {
    const reader = this.wt.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !value) return;
        const recv = new WtRecv(this.nextRecvId++, value as ReadableStream<Uint8Array>);
        this.onIncomingUni?.(recv);
      }
    } catch {
      // the session closed
    }
  }
}

/** Opens a WebTransport session to `url` and resolves when it is ready. */
export async function connectWebTransport(url: string, opts: WebTransportConnectOptions = {}): Promise<WebTransportTransport> {
  const Ctor = (globalThis as { WebTransport?: typeof WebTransport }).WebTransport;
  if (typeof Ctor !== 'function') throw new Error('this browser has no WebTransport');
  const options: WebTransportOptions = {};
  if (opts.certificateHashes?.length) {
    options.serverCertificateHashes = opts.certificateHashes.map((value) => ({ algorithm: 'sha-256', value: value as BufferSource }));
  }
  const wt = new Ctor(url, options);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const abort = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${opts.timeoutMs ?? 10000} ms`)), opts.timeoutMs ?? 10000);
    opts.signal?.addEventListener('abort', () => reject(new Error('cancelled')));
  });
  try {
    await Promise.race([wt.ready, abort]);
  } catch (e) {
    try {
      wt.close();
    } catch {
      // never opened
    }
    wt.closed.catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return new WebTransportTransport(wt);
}
