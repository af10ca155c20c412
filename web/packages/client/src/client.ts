/**
 * {@link VoqClient}: a voq/1 voice session in the browser — microphone, carrier, session state
 * machine, codecs and playout wired together.
 *
 * ```ts
 * const client = new VoqClient({ mode: 'push_to_talk', codec: 'opus' });
 * client.on('response.done', (e) => console.log(e.response.status));
 * await client.start();              // microphone + connection, in parallel
 * client.startTurn();                // … the user talks …
 * await client.endTurn();            // FIN: the server commits the turn and answers
 * await client.interrupt();          // barge-in while the agent speaks
 * ```
 *
 * Capture starts at once: audio of a turn captured before or while the connection is being set
 * up (or re-established) is queued and sent, never dropped. A push-to-talk turn is kept until the
 * server confirms it (`input_audio_buffer.committed`), so a turn cut by a lost connection is sent
 * again, whole, on the next one (unless the server refused it: STOP_SENDING).
 *
 * The shell over two sans-IO cores: {@link ClientSession} (the protocol) and {@link Reconnector}
 * (when to dial again, which turns to send again). After every input it drains both, and it
 * keeps one timer, at the earlier of their `pollTimeout()`s.
 */

import { BrowserAudio } from './audio/browser.js';
import type { BrowserAudioOptions } from './audio/browser.js';
import { browserCodecs, floatToPcm16, opusSupport } from './audio/codecs.js';
import type { AudioFrameDecoder, AudioFrameEncoder, CodecFactory } from './audio/codecs.js';
import type { AudioIO, EchoLoopbackState } from './audio/io.js';
import { connect as defaultConnect } from './connect.js';
import type { Attempt, ConnectOptions, Connected, TransportChoice, VoqServerConfig } from './connect.js';
import { Emitter } from './emitter.js';
import { ClosedError, Code, UnreachableError, VoqError, codeName } from './errors.js';
import type { Codec, ResumedState, ResumeRequest, ServerEventMap, SessionInfo } from './events.js';
import { SAMPLE_RATE } from './events.js';
import { Reconnector } from './reconnect.js';
import type { ReconnectAction, ReconnectConfig, ReplayTurn } from './reconnect.js';
import { ClientSession } from './session.js';
import type { ClientOutput, InStream, OutStream, PlaybackChange, PlayoutSnapshot, ResponseStats } from './session.js';
import type { RecvStream, SendStream, Transport, TransportName } from './transport.js';

export type Mode = 'push_to_talk' | 'server_vad';

export interface VoqClientOptions {
  /** The server's http(s) base URL (default: the page's origin). */
  url?: string;
  /** `auto` (default): WebTransport, with WebSocket in parallel after `headStartMs`. */
  transport?: TransportChoice;
  /** Codec for both directions (default `opus`; `pcm16` if the browser cannot do Opus). */
  codec?: Codec;
  inputCodec?: Codec;
  outputCodec?: Codec;
  /** `push_to_talk` (default): one stream per turn; `server_vad`: one continuous stream. */
  mode?: Mode;
  /** WebTransport's head start before WebSocket is tried too (default 300 ms). */
  headStartMs?: number;
  /** Give up connecting after this long (default 10 s). */
  timeoutMs?: number;
  /** Audio buffered before playback starts (default 100 ms). */
  startThresholdMs?: number;
  /** Ask the server for this send-ahead lead. */
  sendAheadMs?: number;
  /** Route playback through a local peer connection so the echo canceller sees it (default true). */
  echoCancellationLoopback?: boolean;
  /** The browser's processing of the microphone (each on by default). */
  microphone?: MicrophoneProcessing;
  /**
   * What the server's `/voq/config.json` says (the WebTransport URL and its certificate hashes,
   * the WebSocket path). Given, the client does not fetch it: for a page behind a proxy, a relay
   * or an anycast name, and to save that round trip before the first words.
   */
  serverConfig?: VoqServerConfig;
  /** How the microphone is read (default `auto`: `MediaStreamTrackProcessor` where available). */
  capture?: 'auto' | 'track-processor' | 'worklet';
  /** The session token, or a function that fetches a fresh one (see {@link ConnectOptions.token}). */
  token?: ConnectOptions['token'];
  /** Reconnect when the connection drops or the server goes away (default true). */
  reconnect?: boolean;
  /** Dials after a lost connection before giving up (default 5; backoff 250 ms … 8 s). */
  maxReconnectAttempts?: number;
  /** Server VAD: barge in when the server hears the user start speaking (default true). */
  interruptOnSpeech?: boolean;
  /** The audio side (default: the browser's, see `BrowserAudio`). */
  audio?: AudioIO;
  /** Codecs (default: pcm16 in code, Opus through WebCodecs). */
  codecs?: CodecFactory;
  /** Connects (default {@link defaultConnect}); tests pass fakes. */
  connect?: (opts: ConnectOptions) => Promise<Connected>;
  /** Clock in ms (default `performance.now`). */
  now?: () => number;
  /**
   * Keep a copy of every turn's captured audio, as the pcm16 samples given to the encoder, for
   * {@link VoqClient.capturedAudio} (default false). For tests and diagnostics: it holds
   * 48 KB per second of audio captured into turns, for as long as the client exists.
   */
  keepCapturedAudio?: boolean;
}

/** The browser's processing of the microphone, as `getUserMedia` constraints name it. */
export interface MicrophoneProcessing {
  echoCancellation?: boolean;
  noiseSuppression?: boolean;
  autoGainControl?: boolean;
}

/** The `getUserMedia` constraints of {@link MicrophoneProcessing}: only what was set. */
export function microphoneConstraints(m: MicrophoneProcessing): MediaTrackConstraints {
  const c: MediaTrackConstraints = {};
  if (m.echoCancellation !== undefined) c.echoCancellation = m.echoCancellation;
  if (m.noiseSuppression !== undefined) c.noiseSuppression = m.noiseSuppression;
  if (m.autoGainControl !== undefined) c.autoGainControl = m.autoGainControl;
  return c;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** Events of the client itself (server events pass through under their own names). */
export interface LocalEventMap {
  'transport.connected': {
    type: 'transport.connected';
    transport: TransportName;
    connectMs: number;
    attempts: Attempt[];
    reconnect: boolean;
  };
  'transport.closed': { type: 'transport.closed'; transport: TransportName; code: number | null; reason: string; local: boolean };
  /** Dial `attempt` comes after `delayMs` (0 for the first after a `going_away`: at once). */
  'transport.reconnecting': { type: 'transport.reconnecting'; attempt: number; delayMs: number; reason: string };
  'input.turn_started': { type: 'input.turn_started'; item_id: string };
  'input.turn_ended': { type: 'input.turn_ended'; item_id: string; frames: number; audio_ms: number; bytes: number };
  /**
   * The server stopped a user turn's stream (it refused the turn): nothing more is sent for it on
   * this connection. With `going_away` (a draining server), a push-to-talk turn is sent again,
   * whole, to the next server; with any other code, never again.
   */
  'input.stream_stopped': { type: 'input.stream_stopped'; item_id: string; code: number; code_name: string };
  'playback.started': { type: 'playback.started'; response_id: string; played_ms: number };
  'playback.underrun': { type: 'playback.underrun'; response_id: string; played_ms: number };
  'playback.resumed': { type: 'playback.resumed'; response_id: string; played_ms: number };
  'playback.ended': { type: 'playback.ended'; response_id: string; played_ms: number; reason: string };
  interrupted: { type: 'interrupted'; response_id: string; played_ms: number };
  warning: { type: 'warning'; message: string };
  /** Something failed after `start()` resolved (the connection could not be re-established…). */
  'client.error': { type: 'client.error'; error: VoqError };
}

export type VoqEventMap = ServerEventMap & LocalEventMap;
export type VoqEvent = VoqEventMap[keyof VoqEventMap];

/** What {@link VoqClient.stats} returns. */
export interface VoqStats {
  state: ClientState;
  transport: TransportName | null;
  rttMs: number | null;
  sessionId: string | null;
  mode: Mode;
  inputCodec: Codec;
  outputCodec: Codec;
  /** Agent audio queued in the playout (ms). */
  bufferedMs: number;
  /** Position in the current (or last) response (ms). */
  playedMs: number;
  underruns: number;
  stallMs: number;
  /** User turns ended (push-to-talk) or committed by the server (server VAD). */
  turnsSent: number;
  framesSent: number;
  /** Encoded user audio bytes (payloads). */
  bytesSent: number;
  /** Audio captured into turns (ms). */
  capturedMs: number;
  responses: number;
  framesReceived: number;
  bytesReceived: number;
  /** The echo-cancellation loopback: `active`, `off`, `failed` or `pending`. */
  echoLoopback: EchoLoopbackState;
  loopbackLatencyMs: number | null;
  /** How the microphone is read: `track-processor` or `worklet`. */
  captureMethod: string | null;
  connectMs: number | null;
  reconnects: number;
  attempts: Attempt[];
}

interface Turn {
  itemId: string | null;
  encoder: AudioFrameEncoder;
  /** Packets produced before the turn was started in the session. */
  pending: Array<[Uint8Array, number]>;
  /** Push-to-talk: the reconnector keeps its packets until the server confirms it, for a resend. */
  keep: boolean;
  /** The session it was (last) started in. */
  session: ClientSession | null;
  /**
   * The server refused it for good (STOP_SENDING with any code but `going_away`): nothing more
   * of it is sent, counted or kept. A turn stopped with `going_away` is not marked: its session
   * drops its packets, the reconnector keeps them for the next server.
   */
  stopped: boolean;
  captured: number;
  limit: number | null;
  state: 'capturing' | 'flushing' | 'ended';
  /** With `keepCapturedAudio`: what was captured into the turn, pcm16 little-endian, in order. */
  copy: Uint8Array[] | null;
}

interface Conn {
  transport: Transport;
  control: SendStream;
  out: Map<OutStream, SendStream>;
  in: Map<InStream, RecvStream>;
}

const NETWORK_OUTPUTS = new Set<ClientOutput['type']>(['control', 'open_stream', 'stream_data', 'finish_stream', 'reset_stream', 'stop_sending']);

export class VoqClient extends Emitter<VoqEventMap> {
  private readonly opts: VoqClientOptions;
  private readonly now: () => number;
  private readonly codecs: CodecFactory;
  private readonly connectFn: (opts: ConnectOptions) => Promise<Connected>;
  private audioIO: AudioIO | null;
  private _session: ClientSession;
  private readonly reconnector: Reconnector<Turn>;
  private _state: ClientState = 'idle';
  private conn: Conn | null = null;
  private netQueue: ClientOutput[] = [];
  private inputCodec: Codec;
  private outputCodec: Codec;
  private readonly mode: Mode;
  private capturing: Turn | null = null;
  private active: Turn | null = null;
  private queue: Turn[] = [];
  private decoders = new Map<string, AudioFrameDecoder>();
  private nextIn = 1;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pumping = false;
  private totals = { turns: 0, frames: 0, bytes: 0, captured: 0 };
  private lastResponse: ResponseStats | null = null;
  /**
   * A resume asked for and not yet answered: the kept turns wait for `voq.session.resumed` to
   * learn what the server holds of them.
   */
  private pendingResume: { turns: ReadonlyArray<ReplayTurn<Turn>>; replyId: string | null } | null = null;
  /** The server refused the last resume: the next new session starts afresh. */
  private resumeRefused = false;
  private connectMs: number | null = null;
  private attempts: Attempt[] = [];
  private codecWarnings: string[] = [];
  /** With `keepCapturedAudio`: every turn begun, for {@link capturedAudio}. */
  private kept: Turn[] = [];

  constructor(opts: VoqClientOptions = {}) {
    super();
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.codecs = opts.codecs ?? browserCodecs;
    this.connectFn = opts.connect ?? defaultConnect;
    this.audioIO = opts.audio ?? null;
    this.mode = opts.mode ?? 'push_to_talk';
    this.inputCodec = opts.inputCodec ?? opts.codec ?? 'opus';
    this.outputCodec = opts.outputCodec ?? opts.codec ?? 'opus';
    if (!opts.codecs) {
      // No WebCodecs (older Safari, Node): pcm16, decided now so that a turn started before
      // start() resolves uses the codec the session announces.
      const g = globalThis as { AudioEncoder?: unknown; AudioDecoder?: unknown };
      if (this.inputCodec === 'opus' && typeof g.AudioEncoder !== 'function') {
        this.inputCodec = 'pcm16';
        this.codecWarnings.push('this browser has no WebCodecs AudioEncoder: sending pcm16');
      }
      if (this.outputCodec === 'opus' && typeof g.AudioDecoder !== 'function') {
        this.outputCodec = 'pcm16';
        this.codecWarnings.push('this browser has no WebCodecs AudioDecoder: receiving pcm16');
      }
    }
    this._session = this.newSession();
    const rc: Partial<ReconnectConfig> = { enabled: opts.reconnect !== false };
    if (opts.maxReconnectAttempts !== undefined) rc.maxAttempts = opts.maxReconnectAttempts;
    this.reconnector = new Reconnector<Turn>(rc);
  }

  get state(): ClientState {
    return this._state;
  }

  /** The session state machine of the current connection (turn and response details). */
  get session(): ClientSession {
    return this._session;
  }

  /** The server's description of the session, once it has sent `session.created`. */
  get serverSession(): SessionInfo | null {
    return this._session.session;
  }

  /** The transport in use, if connected. */
  get transport(): Transport | null {
    return this.conn?.transport ?? null;
  }

  /**
   * Opens the microphone and the audio output and connects, all in parallel. Resolves when all
   * three are up; rejects with a {@link VoqError} (`mic_denied`, `unreachable`, `certificate`, …).
   * In server-VAD mode the continuous user stream starts here.
   */
  async start(): Promise<void> {
    if (this._state !== 'idle') throw new VoqError('invalid_state', `start() called in state ${this._state}`);
    this._state = 'connecting';
    // Dial first: the network's round trips then overlap the audio devices' start (about 60 ms
    // of the page's time in Chromium, measured with e2e/setup-rtt.mjs), rather than follow it.
    const conn = this.dial(false);
    for (const w of this.codecWarnings) this.emit('warning', { type: 'warning', message: w });
    if (!this.opts.codecs && (this.inputCodec === 'opus' || this.outputCodec === 'opus')) {
      // The constructor checked that WebCodecs exists; this checks it can do Opus. If not, and
      // nothing was captured yet, fall back to pcm16.
      void opusSupport().then((can) => {
        if ((this.inputCodec === 'opus' && !can.encode) || (this.outputCodec === 'opus' && !can.decode)) {
          this.emit('warning', { type: 'warning', message: 'WebCodecs reports no Opus support: the session may fail to encode or decode audio (use codec "pcm16")' });
        }
      });
    }
    if (!this.audioIO) {
      const o: BrowserAudioOptions = {};
      if (this.opts.echoCancellationLoopback !== undefined) o.echoCancellationLoopback = this.opts.echoCancellationLoopback;
      if (this.opts.capture !== undefined) o.capture = this.opts.capture;
      if (this.opts.microphone !== undefined) o.constraints = microphoneConstraints(this.opts.microphone);
      this.audioIO = new BrowserAudio(o);
    }
    const audio = this.audioIO;
    if (this.mode === 'server_vad') this.beginTurn(null, false);
    const capture = audio.startCapture((f) => this.onCaptureFrame(f));
    const playback = audio.startPlayback().then(() => {
      audio.player.onSnapshot = (s) => this.onSnapshot(s);
    });
    // allSettled observes all three, so nothing rejects unobserved. A failed microphone (denied,
    // missing) is final: report it at once rather than after the connection settles (a slow
    // server would otherwise hold the answer for its whole connect timeout); a connection that
    // completes later is closed by dial().
    const all = Promise.allSettled([capture, playback, conn]);
    const micFailure = await Promise.race([
      capture.then(
        () => null,
        (e: unknown) => ({ reason: e }),
      ),
      all.then(() => null),
    ]);
    const failed = micFailure ?? (await all).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await this.close();
      throw failed.reason instanceof VoqError ? failed.reason : new VoqError('unsupported', String((failed.reason as Error)?.message ?? failed.reason), { cause: failed.reason });
    }
  }

  /**
   * Push-to-talk: starts a user turn. With `durationMs` the turn ends by itself after that much
   * captured audio. A turn still open is ended first.
   */
  startTurn(opts: { durationMs?: number } = {}): void {
    if (this._state === 'closed') throw new VoqError('invalid_state', 'the client is closed');
    if (this.mode === 'server_vad') throw new VoqError('invalid_state', 'server VAD mode streams continuously: no turns to start');
    if (this.capturing) void this.endTurn();
    const limit = opts.durationMs !== undefined ? Math.round((opts.durationMs * SAMPLE_RATE) / 1000) : null;
    this.beginTurn(limit, true);
  }

  /** Push-to-talk: ends the open turn (FIN once the encoder has drained); the server commits it. */
  async endTurn(): Promise<void> {
    const t = this.capturing;
    if (!t) return;
    this.capturing = null;
    t.state = 'flushing';
    try {
      await t.encoder.flush();
    } catch (e) {
      this.emit('warning', { type: 'warning', message: `encoder flush failed: ${(e as Error).message}` });
    }
    t.state = 'ended';
    t.encoder.close();
    if (this.active === t) this.finishTurn(t);
  }

  /** Whether a push-to-talk turn is capturing. */
  get talking(): boolean {
    return this.capturing !== null && this.mode === 'push_to_talk';
  }

  /** Server VAD: end the current turn now (`input_audio_buffer.commit`). */
  commit(): void {
    this._session.commit();
    this.pump();
  }

  /** Discards the open turn (its stream is reset) and asks the server to clear its input. */
  clearInput(): void {
    const t = this.capturing;
    if (t && this.mode === 'push_to_talk') {
      this.capturing = null;
      t.encoder.close();
      this.reconnector.turnDiscarded(t);
      this.queue = this.queue.filter((x) => x !== t);
      if (this.active === t) this.active = null;
    }
    this._session.clear();
    if (this.mode === 'server_vad') this.beginTurn(null, false);
    this.activateNext();
    this.pump();
  }

  /** Asks the server to stop the response it is generating. */
  cancelResponse(): void {
    this._session.cancelResponse();
    this.pump();
  }

  /**
   * Barge-in: silences the output at once (the next audio quantum is silent), flushes the
   * playout, sends `conversation.item.truncate` with the exact position heard and STOP_SENDING
   * (`cancelled`) on the response stream. Resolves with the played ms, or `null` if nothing was
   * playing.
   */
  async interrupt(): Promise<number | null> {
    const cur = this._session.currentResponse;
    if (!cur || !this.audioIO) return null;
    const id = cur.responseId;
    const f = await this.audioIO.player.flush(id);
    this.dropDecoder(id);
    // The worklet's cursor runs ahead of the ear by the echo-cancellation loopback's delay and
    // the output device's latency: truncate at what the user heard, not at what was rendered.
    const loopbackMs = this.audioIO.echoLoopback() === 'active' ? (this.audioIO.loopbackLatencyMs() ?? 0) : 0;
    const deviceMs = this.audioIO.outputLatencyMs?.() ?? 0;
    const behind = Math.round((loopbackMs + deviceMs) * 24);
    const heard = f.responseId === id ? Math.max(0, f.played - behind) : undefined;
    const ms = this._session.interrupt(this.now(), heard);
    if (ms !== null) this.emit('interrupted', { type: 'interrupted', response_id: id, played_ms: ms });
    this.pump();
    return ms;
  }

  /**
   * With the option `keepCapturedAudio`: the audio captured into the turn `itemId` (its current
   * id: a turn sent again after a reconnect has a new one) — the 24 kHz samples exactly as they
   * went into the encoder, as pcm16. With codec `pcm16` these are the payloads sent, so the
   * server's recording of the turn must equal them sample for sample; with Opus, the server
   * decodes something close. `null` without the option or for an unknown item. In server-VAD
   * mode the one continuous stream is one "turn" (the server's items are cut from it).
   */
  capturedAudio(itemId: string): Int16Array | null {
    const t = this.kept.find((x) => x.itemId === itemId);
    if (!t?.copy) return null;
    let n = 0;
    for (const c of t.copy) n += c.length;
    const out = new Int16Array(n >> 1);
    let i = 0;
    for (const c of t.copy) {
      const v = new DataView(c.buffer, c.byteOffset, c.length);
      for (let j = 0; j + 1 < c.length; j += 2) out[i++] = v.getInt16(j, true);
    }
    return out;
  }

  /** Numbers for a dashboard or a test. */
  stats(): VoqStats {
    const r = this._session.currentResponse ?? this.lastResponse;
    const responses = this._session.responses;
    let framesReceived = 0;
    let bytesReceived = 0;
    for (const x of responses) {
      framesReceived += x.framesReceived;
      bytesReceived += x.bytesReceived;
    }
    const vadTurns = this.mode === 'server_vad' ? this._session.turns.filter((t) => t.framesConfirmed !== undefined).length : 0;
    return {
      state: this._state,
      transport: this.conn?.transport.name ?? null,
      // The carrier's own estimate where it has one (WebSocket PINGs), else voq.ping's.
      rttMs: this.conn?.transport.rttMs() ?? this._session.rttMs,
      sessionId: this._session.session?.id ?? null,
      mode: this.mode,
      inputCodec: this.inputCodec,
      outputCodec: this.outputCodec,
      bufferedMs: this._session.bufferedMs,
      playedMs: r?.playedMs ?? 0,
      underruns: r?.underruns ?? 0,
      stallMs: r?.stallMs ?? 0,
      turnsSent: this.mode === 'server_vad' ? vadTurns : this.totals.turns,
      framesSent: this.totals.frames,
      bytesSent: this.totals.bytes,
      capturedMs: Math.floor((this.totals.captured * 1000) / SAMPLE_RATE),
      responses: responses.length,
      framesReceived,
      bytesReceived,
      echoLoopback: this.audioIO?.echoLoopback() ?? 'off',
      loopbackLatencyMs: this.audioIO?.loopbackLatencyMs() ?? null,
      captureMethod: this.audioIO?.captureMethod?.() ?? null,
      connectMs: this.connectMs,
      reconnects: this.reconnector.reconnects,
      attempts: this.attempts,
    };
  }

  /** Ends the session: closes the connection (code 0), the microphone and the audio output. */
  async close(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'closed';
    this.reconnector.close();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const t of [this.capturing, ...this.queue]) t?.encoder.close();
    this.capturing = null;
    this.queue = [];
    this.active = null;
    for (const d of this.decoders.values()) d.close();
    this.decoders.clear();
    const c = this.conn;
    this.conn = null;
    c?.transport.close(Code.NoError, 'bye');
    await this.audioIO?.close().catch(() => {});
  }

  // ---- turns ----

  private newSession(resume?: ResumeRequest): ClientSession {
    const cfg: ConstructorParameters<typeof ClientSession>[0] = {
      inputCodec: this.inputCodec,
      outputCodec: this.outputCodec,
      serverVad: this.mode === 'server_vad',
    };
    if (this.opts.startThresholdMs !== undefined) cfg.startThresholdMs = this.opts.startThresholdMs;
    if (this.opts.sendAheadMs !== undefined) cfg.sendAheadMs = this.opts.sendAheadMs;
    if (resume) cfg.resume = resume;
    return new ClientSession(cfg);
  }

  private beginTurn(limit: number | null, keep: boolean): void {
    const t: Turn = {
      itemId: null,
      encoder: null as unknown as AudioFrameEncoder,
      pending: [],
      keep,
      session: null,
      stopped: false,
      captured: 0,
      limit,
      state: 'capturing',
      copy: this.opts.keepCapturedAudio ? [] : null,
    };
    if (t.copy) this.kept.push(t);
    t.encoder = this.codecs.encoder(
      this.inputCodec,
      (payload, samples) => this.onPacket(t, payload, samples),
      (e) => this.emit('warning', { type: 'warning', message: `audio encoder: ${e.message}` }),
    );
    this.capturing = t;
    this.queue.push(t);
    this.activateNext();
  }

  private activateNext(): void {
    if (this.active) return;
    const t = this.queue[0];
    if (!t) return;
    this.active = t;
    const now = this.now();
    t.itemId = this._session.startTurn(now);
    t.session = this._session;
    if (t.keep) this.reconnector.turnStarted(t, t.itemId);
    for (const [p, n] of t.pending) {
      this._session.sendAudio(now, p, n);
      if (t.keep) this.reconnector.turnAudio(t, p, n);
    }
    t.pending = [];
    this.emit('input.turn_started', { type: 'input.turn_started', item_id: t.itemId });
    if (t.state === 'ended') this.finishTurn(t);
    else this.pump();
  }

  private finishTurn(t: Turn): void {
    // A turn the server stopped before the connection was lost was not started again in the
    // new session: there is nothing of it to end there.
    const s = t.session;
    if (s === this._session) s.endTurn(this.now());
    let stats: { framesSent: number; audioMsSent: number; bytesSent: number } | undefined = s?.turns.find((x) => x.itemId === t.itemId);
    const kept = this.pendingResume && t.keep ? this.reconnector.packetsOf(t) : null;
    if (kept) {
      // Ended while its session is being resumed: the whole turn is what the reconnector kept
      // (it goes, from what the server holds, once the session is back).
      let samples = 0;
      let bytes = 0;
      for (const [p, n] of kept) {
        samples += n;
        bytes += p.length;
      }
      stats = { framesSent: kept.length, audioMsSent: Math.floor((samples * 1000) / 24000), bytesSent: bytes };
    }
    this.queue = this.queue.filter((x) => x !== t);
    this.active = null;
    this.totals.turns += 1;
    if (t.keep) this.reconnector.turnEnded(t);
    this.emit('input.turn_ended', {
      type: 'input.turn_ended',
      item_id: t.itemId ?? '',
      frames: stats?.framesSent ?? 0,
      audio_ms: stats?.audioMsSent ?? 0,
      bytes: stats?.bytesSent ?? 0,
    });
    this.activateNext();
    this.pump();
  }

  private onCaptureFrame(samples: Float32Array): void {
    const t = this.capturing;
    if (!t || this._state === 'closed') return;
    let frame = samples;
    if (t.limit !== null && t.captured + frame.length > t.limit) frame = frame.subarray(0, t.limit - t.captured);
    if (frame.length > 0) {
      t.captured += frame.length;
      this.totals.captured += frame.length;
      // The same conversion the pcm16 encoder makes: for pcm16 the copy is the payload itself.
      t.copy?.push(floatToPcm16(frame));
      t.encoder.encode(frame);
    }
    if (t.limit !== null && t.captured >= t.limit) void this.endTurn();
  }

  private onPacket(t: Turn, payload: Uint8Array, samples: number): void {
    // Only a started turn can have been stopped; its packets are not sent (so not counted).
    if (!t.stopped) {
      this.totals.frames += 1;
      this.totals.bytes += payload.length;
    }
    if (this.active !== t) {
      t.pending.push([payload, samples]);
      return;
    }
    // A stopped turn of a lost session goes nowhere; in its own session, the session drops
    // the packet and counts it (`framesDropped`). (A turn stopped with `going_away` is not
    // `stopped` here: the reconnector keeps the packet for the next server.) While a resume is
    // being answered, a kept turn's packets are kept: they go with the rest of the turn.
    if (t.session !== this._session) {
      if (this.pendingResume && t.keep && !t.stopped) this.reconnector.turnAudio(t, payload, samples);
      return;
    }
    this._session.sendAudio(this.now(), payload, samples);
    if (t.keep && !t.stopped) this.reconnector.turnAudio(t, payload, samples);
    this.pump();
  }

  // ---- connection ----

  private async dial(reconnect: boolean): Promise<void> {
    const o: ConnectOptions = {};
    if (this.opts.url !== undefined) o.url = this.opts.url;
    if (this.opts.transport !== undefined) o.transport = this.opts.transport;
    if (this.opts.headStartMs !== undefined) o.headStartMs = this.opts.headStartMs;
    if (this.opts.timeoutMs !== undefined) o.timeoutMs = this.opts.timeoutMs;
    if (this.opts.token !== undefined) o.token = this.opts.token;
    if (this.opts.serverConfig !== undefined) o.config = this.opts.serverConfig;
    const r = await this.connectFn(o);
    if (this._state === 'closed') {
      r.transport.close(Code.NoError, 'client closed');
      return;
    }
    this.connectMs = r.connectMs;
    this.attempts = r.attempts;
    this.attach(r.transport);
    this.reconnector.handleConnected(this.now());
    this.emit('transport.connected', { type: 'transport.connected', transport: r.winner, connectMs: r.connectMs, attempts: r.attempts, reconnect });
    this.pump();
  }

  private attach(t: Transport): void {
    const { send, recv } = t.openBidi();
    const conn: Conn = { transport: t, control: send, out: new Map(), in: new Map() };
    this.conn = conn;
    this._state = 'connected';
    recv.onData = (b) => {
      if (this.conn !== conn) return;
      this._session.handleControl(this.now(), b);
      this.pump();
    };
    recv.onFin = () => this.lost(conn, 'the server ended the control stream');
    recv.onReset = (code) => this.lost(conn, `the server reset the control stream (${codeName(code)})`);
    t.onIncomingUni = (s) => {
      if (this.conn !== conn) {
        s.stop(Code.Cancelled);
        return;
      }
      const id = this.nextIn++;
      conn.in.set(id, s);
      s.onData = (b) => {
        if (this.conn !== conn) return;
        this._session.handleStreamData(this.now(), id, b);
        this.pump();
      };
      s.onFin = () => {
        conn.in.delete(id);
        if (this.conn !== conn) return;
        this._session.handleStreamFin(this.now(), id);
        this.pump();
      };
      s.onReset = (code) => {
        conn.in.delete(id);
        if (this.conn !== conn) return;
        // `cancelled` is what a barge-in or `response.cancel` asked for; anything else (the
        // agent failed) is worth a line in the log. The session plays what arrived either way.
        if (code !== Code.Cancelled) this.emit('warning', { type: 'warning', message: `the server reset an agent audio stream: ${codeName(code)}` });
        this._session.handleStreamReset(this.now(), id, code);
        this.pump();
      };
    };
    void t.closed.then((info) => {
      this.emit('transport.closed', { type: 'transport.closed', transport: t.name, code: info.code, reason: info.reason, local: info.local });
      if (this.conn === conn) this.lost(conn, info.reason);
    });
    // What queued while connecting goes out now, in order.
    const q = this.netQueue;
    this.netQueue = [];
    for (const o of q) this.apply(o);
  }

  /** Lets go of `conn` (if it is the current one) and plays out what arrived on it. */
  private drop(conn: Conn, reason: string): boolean {
    if (this.conn !== conn) return false;
    this.conn = null;
    conn.transport.close(Code.NoError, reason);
    if (this._state === 'closed') return false;
    const cur = this._session.currentResponse;
    // A resumable session's reply plays on from its buffer while the client reconnects: the
    // rest comes from the server that takes the session back.
    if (cur && !this.mayResume()) this.finishPlayout(cur.responseId);
    return true;
  }

  /** Whether a lost connection is followed by a resume of the same session. */
  private mayResume(): boolean {
    return this.opts.reconnect !== false && !this.resumeRefused && this._session.resumeToken !== null;
  }

  /** The connection is gone: the reconnector says what comes next. */
  private lost(conn: Conn, reason: string): void {
    if (!this.drop(conn, reason)) return;
    this.reconnector.handleLost(this.now(), reason);
    this.pump();
  }

  /**
   * A session for a new connection. Resumable: the same session, asked back with its token
   * (the kept turns wait for the answer, which says what the server holds of them; the reply
   * goes on). Otherwise a new session: the kept turns are sent again, whole, in order.
   */
  private restartSession(turns: ReadonlyArray<ReplayTurn<Turn>>): void {
    this._state = 'reconnecting';
    const last = this._session.currentResponse ?? this._session.responses[this._session.responses.length - 1] ?? null;
    if (last) this.lastResponse = last;
    this.netQueue = [];
    const old = this._session;
    const token = this.mayResume() ? old.resumeToken : null;
    if (token !== null) {
      const request: ResumeRequest = { token };
      const point = old.resumePoint;
      if (point) request.reply = point;
      this._session = this.newSession(request);
      this._session.continueFrom(old);
      this.pendingResume = { turns, replyId: point?.response_id ?? null };
      return;
    }
    this.pendingResume = null;
    this._session = this.newSession();
    this.startTurnsAgain(turns);
  }

  /** The kept turns, whole, as new turns of the current session, in order. */
  private startTurnsAgain(turns: ReadonlyArray<ReplayTurn<Turn>>): void {
    const now = this.now();
    for (const r of turns) {
      const t = r.turn;
      t.itemId = this._session.startTurn(now);
      t.session = this._session;
      this.reconnector.turnStarted(t, t.itemId);
      for (const [p, n] of r.packets) this._session.sendAudio(now, p, n);
      if (r.ended) this._session.endTurn(now);
    }
    this.restartVadStream(now);
  }

  /** Server VAD: the continuous input stream goes on from here, on a new stream of the current
   * session (also one the old server stopped). Push-to-talk turns are the reconnector's. */
  private restartVadStream(now: number): void {
    const a = this.active;
    if (a && !a.keep) {
      a.stopped = false;
      a.itemId = this._session.startTurn(now);
      a.session = this._session;
    }
  }

  private act(a: ReconnectAction<Turn>): void {
    switch (a.type) {
      case 'leave':
        if (this.conn) this.drop(this.conn, a.reason);
        break;
      case 'replay':
        this.restartSession(a.turns);
        break;
      case 'wait':
        this.emit('transport.reconnecting', { type: 'transport.reconnecting', attempt: a.attempt, delayMs: a.delayMs, reason: a.reason });
        break;
      case 'dial':
        this.dial(true).catch((e: unknown) => {
          this.reconnector.handleDialFailed(this.now(), e instanceof Error ? e.message : String(e));
          this.pump();
        });
        break;
      case 'give_up': {
        const error =
          a.kind === 'disabled'
            ? new ClosedError(`connection closed: ${a.reason}`)
            : new UnreachableError(`lost the connection and could not reconnect: ${a.reason}`);
        void this.close();
        this.emit('client.error', { type: 'client.error', error });
        break;
      }
      case 'forget':
        this.emit('warning', {
          type: 'warning',
          message: `turn ${a.itemId} will not be sent again after a reconnect: more unconfirmed ${a.limit === 'turns' ? 'turns' : 'audio'} than the client keeps`,
        });
        break;
    }
  }

  // ---- the drain loop ----

  /** Drains both cores until neither has anything more, then sets the timer. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const o = this._session.poll();
        if (o) {
          if (NETWORK_OUTPUTS.has(o.type) && !this.conn) this.netQueue.push(o);
          else this.apply(o);
          continue;
        }
        // A server that is going away is left once nothing is said, sent or played.
        if (this.conn && !this.active && !this.capturing && !this._session.currentResponse) this.reconnector.handleIdle(this.now());
        const a = this.reconnector.poll();
        if (!a) break;
        this.act(a);
      }
    } finally {
      this.pumping = false;
    }
    this.schedule();
  }

  /** The one timer: at the earlier of the two cores' deadlines. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const a = this._session.pollTimeout();
    const b = this.reconnector.pollTimeout();
    const at = a === null ? b : b === null ? a : Math.min(a, b);
    if (at === null || this._state === 'closed') return;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        const now = this.now();
        this._session.handleTimeout(now);
        this.reconnector.handleTimeout(now);
        this.pump();
      },
      Math.max(0, at - this.now()),
    );
  }

  private apply(o: ClientOutput): void {
    const c = this.conn;
    switch (o.type) {
      case 'control':
        c?.control.write(o.bytes);
        break;
      case 'open_stream': {
        if (!c) break;
        const s = c.transport.openUni();
        s.onStop = (code) => {
          c.out.delete(o.stream);
          // A stream of an earlier connection: that session is gone (stream numbers start over
          // in the next one), and its unconfirmed turns are sent again whole.
          if (this.conn !== c) return;
          // The server refused the turn: the session stops writing it (→ `turn_stopped`).
          this._session.handleStreamStopped(this.now(), o.stream, code);
          this.pump();
        };
        c.out.set(o.stream, s);
        s.write(o.bytes);
        break;
      }
      case 'stream_data':
        c?.out.get(o.stream)?.write(o.bytes);
        break;
      case 'finish_stream':
        c?.out.get(o.stream)?.finish();
        c?.out.delete(o.stream);
        break;
      case 'reset_stream':
        c?.out.get(o.stream)?.reset(o.code);
        c?.out.delete(o.stream);
        break;
      case 'stop_sending':
        c?.in.get(o.stream)?.stop(o.code);
        c?.in.delete(o.stream);
        break;
      case 'playout_start': {
        for (const [id, d] of this.decoders) {
          if (id !== o.responseId) {
            d.close();
            this.decoders.delete(id);
          }
        }
        const id = o.responseId;
        this.decoders.get(id)?.close();
        try {
          this.decoders.set(
            id,
            this.codecs.decoder(
              o.codec,
              (pts, samples) => this.audioIO?.player.push(id, pts, samples),
              (e) => this.emit('warning', { type: 'warning', message: `audio decoder: ${e.message}` }),
            ),
          );
        } catch (e) {
          this.emit('warning', { type: 'warning', message: (e as Error).message });
        }
        this.audioIO?.player.start(id, o.startThresholdMs);
        break;
      }
      case 'reply_frame':
        this.decoders.get(o.responseId)?.decode(o.pts, o.payload);
        break;
      case 'playout_finish':
        this.finishPlayout(o.responseId);
        break;
      case 'playout_flush':
        this.dropDecoder(o.responseId);
        void this.audioIO?.player.flush(o.responseId);
        break;
      case 'playback':
        this.onPlayback(o.change, o.responseId, o.playedMs, o.reason);
        break;
      case 'turn_stopped': {
        // The server refused the turn: nothing more of it goes out on this connection. Refused
        // with `going_away` (the server is draining), a push-to-talk turn is kept whole, the rest
        // of it included, and sent again to the next server; any other refusal is final.
        const a = this.active;
        const resend = a?.keep === true && o.code === Code.GoingAway;
        if (a && a.session === this._session && a.itemId === o.itemId && !resend) a.stopped = true;
        this.reconnector.handleTurnStopped(o.itemId, o.code);
        this.emit('input.stream_stopped', { type: 'input.stream_stopped', item_id: o.itemId, code: o.code, code_name: codeName(o.code) });
        break;
      }
      case 'event':
        this.onServerEvent(o.event);
        break;
      case 'problem':
        this.emit('warning', { type: 'warning', message: o.message });
        break;
    }
  }

  private finishPlayout(id: string): void {
    const d = this.decoders.get(id);
    this.decoders.delete(id);
    const done = d ? d.flush().catch(() => {}) : Promise.resolve();
    void done.then(() => {
      d?.close();
      this.audioIO?.player.finish(id);
    });
  }

  private dropDecoder(id: string): void {
    this.decoders.get(id)?.close();
    this.decoders.delete(id);
  }

  private onPlayback(change: PlaybackChange, id: string, playedMs: number, reason?: string): void {
    const base = { response_id: id, played_ms: playedMs };
    if (change === 'ended') {
      const last = this._session.responses.find((r) => r.responseId === id);
      if (last) this.lastResponse = last;
      this.emit('playback.ended', { type: 'playback.ended', ...base, reason: reason ?? 'finished' });
    } else {
      this.emit(`playback.${change}`, { type: `playback.${change}`, ...base } as never);
    }
  }

  private onSnapshot(s: PlayoutSnapshot): void {
    this._session.handlePlayout(this.now(), s);
    this.pump();
  }

  /**
   * The server took the session back: each kept turn goes on from what it holds (the rest on a
   * stream with the same item id; a turn it committed meanwhile is confirmed), new input
   * streams start for server VAD.
   */
  private completeResume(state: ResumedState): void {
    const p = this.pendingResume;
    if (!p) return;
    this.pendingResume = null;
    const now = this.now();
    for (const r of p.turns) {
      const t = r.turn;
      const held = state.turns.find((h) => h.item_id === r.itemId);
      if (held?.committed) {
        this.reconnector.handleCommitted(r.itemId);
        t.session = this._session;
        continue;
      }
      const from = held?.held_pts ?? 0;
      let pts = 0;
      let first = 0;
      let bytes = 0;
      while (first < r.packets.length && pts < from) {
        const [payload, samples] = r.packets[first++]!;
        pts += samples;
        bytes += payload.length;
      }
      t.itemId = this._session.startTurn(now, { itemId: r.itemId, pts, frames: first, bytes });
      t.session = this._session;
      for (const [payload, samples] of r.packets.slice(first)) this._session.sendAudio(now, payload, samples);
      if (r.ended) this._session.endTurn(now);
    }
    this.restartVadStream(now);
    if (p.replyId !== null && state.reply?.response_id !== p.replyId) {
      // The server holds that reply no more: play what arrived.
      this.finishPlayout(p.replyId);
    }
  }

  private onServerEvent(e: ServerEventMap[keyof ServerEventMap]): void {
    switch (e.type) {
      case 'voq.session.resumed':
        this.resumeRefused = false;
        this.completeResume(e.voq);
        break;
      case 'session.created': {
        this.resumeRefused = false;
        const p = this.pendingResume;
        if (p) {
          // A new session where the old one was asked back (a server that does not resume
          // sessions): the old reply is over, the kept turns go to this one whole.
          this.pendingResume = null;
          if (p.replyId !== null) this.finishPlayout(p.replyId);
          this.startTurnsAgain(p.turns);
        }
        break;
      }
      case 'input_audio_buffer.committed':
        this.reconnector.handleCommitted(e.item_id);
        break;
      case 'input_audio_buffer.speech_started':
        if (this.mode === 'server_vad' && this.opts.interruptOnSpeech !== false && this._session.currentResponse) void this.interrupt();
        break;
      case 'error':
        this.emit('warning', { type: 'warning', message: `server error ${e.error.code}: ${e.error.message}` });
        if (e.error.code === 'unauthorized' && this.pendingResume) {
          // The session cannot be taken back (the token expired or was used, the store lost it):
          // the server closes; the next connection starts a new session with the kept turns.
          this.resumeRefused = true;
          if (this.pendingResume.replyId !== null) this.finishPlayout(this.pendingResume.replyId);
          this.pendingResume = null;
        }
        if (e.error.code === 'going_away') this.reconnector.handleGoingAway(this.now());
        break;
      default:
        break;
    }
    this.emit(e.type, e as never);
  }
}
