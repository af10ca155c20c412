/**
 * The client side of a voq/1 session, sans-IO: a mirror of `crates/voq-proto/src/client.rs`.
 *
 * Drain rule: **after every input, drain {@link ClientSession.poll} until it returns `null`; wake
 * at {@link ClientSession.pollTimeout}** (a time on the same clock as the `now` arguments, in
 * ms). The shell ({@link VoqClient}) owns the connection, the codecs and the audio graph.
 *
 * One difference from the Rust session: the playout buffer runs in an AudioWorklet, not here.
 * The session tells the shell what to do with it (`playout_start`, `reply_frame`,
 * `playout_finish`, `playout_flush`) and learns the playback cursor from the worklet's snapshots
 * ({@link ClientSession.handlePlayout}); the reports it sends from them follow the Rust rules
 * (every `played_report_interval_ms` while a response plays, and at once when playback starts,
 * stalls or ends).
 *
 * Nothing is lost while the connection is being set up: outputs queue here until the shell
 * drains them, so audio captured before the carrier is up is sent as soon as it is.
 *
 * Both cores run the behaviour traces of `testdata/session/client-traces.json`
 * (`test/client-traces.test.ts` here, `crates/voq-proto/tests/client_traces.rs` there).
 */

import { Code, ERROR_CODES, codeName } from './errors.js';
import type { ErrorCode } from './errors.js';
import type { ClientEvent, Codec, ResumeRequest, ServerEvent, SessionInfo } from './events.js';
import { FRAME_MS, SAMPLE_RATE, audioFormat, parseServerEvent, responseItemId } from './events.js';
import type { PlayoutState } from './playout.js';
import { AudioStreamDecoder, EventDecoder, FRAME_OVERHEAD, StreamKind, encodeEvent, encodeFrame, encodeHeader } from './wire.js';
import type { AudioHeader } from './wire.js';

export interface SessionConfig {
  /** Codec of the user's audio. */
  inputCodec: Codec;
  /** Codec asked for agent audio. */
  outputCodec: Codec;
  /** Audio buffered before playback starts (and restarts after an underrun). Default 100 ms. */
  startThresholdMs: number;
  /** Ask the server for this send-ahead lead (undefined: the server's default). */
  sendAheadMs?: number;
  /** Server-side VAD instead of push-to-talk. */
  serverVad: boolean;
  /**
   * Send `voq.ping` this often once the session is created, for an RTT on carriers that show
   * none (Chromium's WebTransport has no `getStats()`); `null` turns it off. Default 1000 ms.
   */
  pingIntervalMs: number | null;
  /**
   * Take back a session this client lost (docs/PROTOCOL.md, "Resuming a session"): sent in the
   * first event; the server answers `voq.session.resumed` (or refuses with `unauthorized`).
   */
  resume?: ResumeRequest;
}

export const DEFAULT_SESSION_CONFIG: SessionConfig = {
  inputCodec: 'pcm16',
  outputCodec: 'pcm16',
  startThresholdMs: 100,
  serverVad: false,
  pingIntervalMs: 1000,
};

/** The n-th user-audio stream this session opened (1-based). */
export type OutStream = number;
/** A stream the server opened, numbered by the shell. */
export type InStream = number;

/** Where the worklet's playout of one response is. */
export interface PlayoutSnapshot {
  responseId: string;
  state: PlayoutState;
  /** Samples played (24 kHz). */
  played: number;
  /** Samples queued. */
  buffered: number;
  underruns: number;
  /** Samples of silence rendered while stalled. */
  stalled: number;
}

export type PlaybackChange = 'started' | 'underrun' | 'resumed' | 'ended';

/** What the session asks its shell to do, or tells its application. */
export type ClientOutput =
  /** Write these bytes on the control stream. */
  | { type: 'control'; bytes: Uint8Array }
  /** Open a unidirectional stream and write `bytes` on it. */
  | { type: 'open_stream'; stream: OutStream; bytes: Uint8Array }
  | { type: 'stream_data'; stream: OutStream; bytes: Uint8Array }
  | { type: 'finish_stream'; stream: OutStream }
  | { type: 'reset_stream'; stream: OutStream; code: Code }
  /** Ask the server to stop sending on its stream. */
  | { type: 'stop_sending'; stream: InStream; code: Code }
  /** A response begins: set up a decoder and a fresh playout (replacing any other). */
  | { type: 'playout_start'; responseId: string; codec: Codec; startThresholdMs: number }
  /** Agent audio: decode it and push the samples into the playout at `pts`. */
  | { type: 'reply_frame'; responseId: string; codec: Codec; pts: number; payload: Uint8Array }
  /** No more audio for this response: play out what is queued (after decoding the rest). */
  | { type: 'playout_finish'; responseId: string }
  /** Stop this response's playout at once and discard its buffer. */
  | { type: 'playout_flush'; responseId: string }
  /** Playback started, stalled, resumed or ended (`reason` on `ended`). */
  | {
      type: 'playback';
      change: PlaybackChange;
      responseId: string;
      playedMs: number;
      reason?: 'finished' | 'interrupted' | 'cancelled' | 'superseded' | 'failed';
    }
  /**
   * The server stopped a user-turn stream (STOP_SENDING with `code`): it refused the turn
   * (`going_away`, too many turns, a bad header…). No more audio goes out on it.
   */
  | { type: 'turn_stopped'; itemId: string; code: number }
  /** A server event, for the application. */
  | { type: 'event'; event: ServerEvent }
  /**
   * The server sent something the session could not use (a malformed event or agent-audio
   * stream); the session went on without it. `code` is the `error.code` it is (Rust's
   * `ClientOutput::Problem`).
   */
  | { type: 'problem'; code: ErrorCode; message: string };

/** A user turn as the client sent it and the server confirmed it. */
export interface TurnStats {
  itemId: string;
  framesSent: number;
  bytesSent: number;
  audioMsSent: number;
  /** From `input_audio_buffer.committed`. */
  framesConfirmed?: number;
  audioMsConfirmed?: number;
  bytesConfirmed?: number;
  endedAt?: number;
  confirmedAt?: number;
  /** The code of the server's STOP_SENDING on the turn's stream: it refused the turn, not committed. */
  stoppedCode?: number;
  /** Frames given to `sendAudio` after the server stopped the stream: not sent. */
  framesDropped: number;
}

/** A barge-in and what came of it. */
export interface InterruptStats {
  at: number;
  /** The user's position in the agent's speech when the client silenced it. */
  playedMs: number;
  /** Bytes of agent audio received (before or after the interrupt) and never played. */
  unplayedBytes: number;
  /** `audio_end_ms` of the server's `conversation.item.truncated`. */
  truncatedAudioEndMs?: number;
  truncatedAt?: number;
  /** When the server's reset of the response stream arrived. */
  resetAt?: number;
}

/** A response as the client received and played it. */
export interface ResponseStats {
  responseId: string;
  itemId: string;
  bytesReceived: number;
  framesReceived: number;
  firstFrameAt?: number;
  firstAudioAt?: number;
  playedMs: number;
  bufferedMs: number;
  underruns: number;
  stallMs: number;
  /** `completed`, `cancelled` or `failed`, from `response.done`. */
  status?: string;
  interrupt?: InterruptStats;
}

interface Reply {
  stats: ResponseStats;
  stream: InStream | null;
  codec: Codec;
  state: PlayoutState;
  played: number;
  buffered: number;
  /** Received frames: [pts, encoded bytes on the wire] — what an interrupt wastes. */
  frames: Array<[number, number]>;
  ended: boolean;
  /** End of the audio received, in samples (frames arrive in order: all before it is held). */
  receivedEnd: number;
}

interface Sending {
  stream: OutStream;
  nextPts: number;
  index: number;
  /** The server stopped the stream: the turn stays open (until `endTurn`) but sends nothing. */
  stopped: boolean;
}

interface Inbound {
  decoder: AudioStreamDecoder;
  reply: { responseId: string; codec: Codec } | null;
  /** The pts of the last frame: each must be greater. */
  lastPts: number | null;
}

const ms = (samples: number) => Math.floor((samples * 1000) / SAMPLE_RATE);
const done = (s: PlayoutState) => s === 'finished' || s === 'flushed';
/** The `error.code` of a problem that stops a stream with `code` (as Rust's `Code::error_code`). */
const problemCode = (code: number): ErrorCode => {
  const name = codeName(code);
  return (ERROR_CODES as readonly string[]).includes(name) ? (name as ErrorCode) : 'protocol_violation';
};

/** One voq/1 session, client side. */
export class ClientSession {
  readonly config: SessionConfig;
  private events = new EventDecoder();
  private inbound = new Map<InStream, Inbound>();
  /** Streams of the server this session stopped: what still arrives on them is dropped. */
  private refused = new Set<InStream>();
  private _session: SessionInfo | null = null;
  private reportInterval = 100;
  private nextReport: number | null = null;
  private nextPing: number | null = null;
  private pingId = 0;
  private pingsInFlight = new Map<number, number>();
  private _rttMs: number | null = null;
  private _turns: TurnStats[] = [];
  private sending: Sending | null = null;
  /**
   * Finished turns' streams the server may still stop (→ index in `_turns`), until it confirms
   * the turn; bounded, since a server that never answers must not grow a long call's
   * bookkeeping (as in the Rust session).
   */
  private finished = new Map<OutStream, number>();
  private replies: Reply[] = [];
  private nextTurn = 1;
  private out: ClientOutput[] = [];
  private outHead = 0;

  /** A session that asks for `config`'s codecs and mode in its first event. */
  constructor(config: Partial<SessionConfig> = {}) {
    this.config = { ...DEFAULT_SESSION_CONFIG, ...config };
    const session: ClientEvent & { type: 'session.update' } = {
      type: 'session.update',
      session: {
        type: 'realtime',
        audio: {
          input: {
            format: audioFormat(this.config.inputCodec),
            turn_detection: this.config.serverVad ? { type: 'server_vad' } : null,
          },
          output: { format: audioFormat(this.config.outputCodec) },
        },
      },
    };
    if (this.config.sendAheadMs !== undefined) session.session.voq = { send_ahead_ms: this.config.sendAheadMs };
    if (this.config.resume) session.session.voq = { ...session.session.voq, resume: this.config.resume };
    this.send(session);
  }

  /** The resume token of the latest `session.created` / `voq.session.resumed`, if any. */
  get resumeToken(): string | null {
    return this._session?.voq.resume_token ?? null;
  }

  /**
   * Where this client stands in the reply it is receiving (no `response.done` yet, not
   * interrupted): what a resume request names so the reply goes on from there. `null` if none.
   */
  get resumePoint(): { response_id: string; from_pts: number; played_ms: number } | null {
    const r = this.replies[this.replies.length - 1];
    if (!r || r.stats.status !== undefined || r.stats.interrupt || done(r.state)) return null;
    return { response_id: r.stats.responseId, from_pts: r.receivedEnd, played_ms: ms(r.played) };
  }

  /**
   * Goes on where `from` (the same session on a lost connection) left off: its current reply
   * (its playout keeps playing, and frames of the new stream for the same response join it)
   * and the numbering of its item ids (the server refuses an item id it has seen).
   */
  continueFrom(from: ClientSession): void {
    this.nextTurn = Math.max(this.nextTurn, from.nextTurn);
    const r = from.replies[from.replies.length - 1];
    if (r && !done(r.state)) this.replies.push({ ...r, stream: null, ended: false });
  }

  // ---- the user's audio ----

  /**
   * Starts a user turn; returns its item id. A turn still open is ended first. `resume`: the
   * rest of a turn of a resumed session, under its item id, from its pts (`frames` and `bytes`:
   * what the server holds of it already, counted as sent).
   */
  startTurn(now: number, resume?: { itemId: string; pts: number; frames: number; bytes: number }): string {
    if (this.sending) this.endTurn(now);
    const index = this._turns.length;
    const itemId = resume?.itemId ?? `item_c${this.nextTurn}`;
    const stream = this.nextTurn;
    this.nextTurn += 1;
    const bytes = encodeHeader(StreamKind.UserAudio, {
      item_id: itemId,
      codec: this.config.inputCodec,
      sample_rate: SAMPLE_RATE,
      frame_ms: FRAME_MS,
    });
    this.push({ type: 'open_stream', stream, bytes });
    this._turns.push({
      itemId,
      framesSent: resume?.frames ?? 0,
      bytesSent: resume?.bytes ?? 0,
      audioMsSent: ms(resume?.pts ?? 0),
      framesDropped: 0,
    });
    this.sending = { stream, nextPts: resume?.pts ?? 0, index, stopped: false };
    return itemId;
  }

  /** Whether a user turn is open. */
  get turnOpen(): boolean {
    return this.sending !== null;
  }

  /**
   * One encoded frame of user audio, `samples` long, on the open turn (one is started if none
   * is open). Throws a `WireEncodeError` for payloads over the frame limit. If the server has
   * stopped the turn's stream, the frame is dropped (counted in `framesDropped`).
   */
  sendAudio(now: number, payload: Uint8Array, samples: number): void {
    if (!this.sending) this.startTurn(now);
    const s = this.sending;
    if (!s) return;
    if (s.stopped) {
      // The server refused this turn (`turn_stopped` said so): writing more would only be
      // discarded by the carrier.
      const turn = this._turns[s.index];
      if (turn) turn.framesDropped += 1;
      return;
    }
    const bytes = encodeFrame(s.nextPts, payload);
    s.nextPts += samples;
    const turn = this._turns[s.index];
    if (turn) {
      turn.framesSent += 1;
      turn.bytesSent += payload.length;
      turn.audioMsSent = ms(s.nextPts);
    }
    this.push({ type: 'stream_data', stream: s.stream, bytes });
  }

  /**
   * Ends the open turn (stream FIN): in push-to-talk mode the server commits it. A turn whose
   * stream the server stopped is closed without a FIN (the stream is gone); the next
   * `startTurn`/`sendAudio` opens a new stream either way.
   */
  endTurn(now: number): void {
    const s = this.sending;
    if (!s) return;
    this.sending = null;
    const turn = this._turns[s.index];
    if (turn) turn.endedAt = now;
    if (!s.stopped) {
      this.push({ type: 'finish_stream', stream: s.stream });
      this.rememberFinished(s.stream, s.index);
    }
  }

  /** Server-VAD mode: ask the server to commit what it has now. */
  commit(): void {
    this.send({ type: 'input_audio_buffer.commit' });
  }

  /**
   * Discards the open turn: resets its stream (`cancelled`; not one the server stopped, which
   * is gone already) and tells the server.
   */
  clear(): void {
    const s = this.sending;
    this.sending = null;
    if (s && !s.stopped) this.push({ type: 'reset_stream', stream: s.stream, code: Code.Cancelled });
    this.send({ type: 'input_audio_buffer.clear' });
  }

  /**
   * The server sent STOP_SENDING on one of our user-turn streams: it refused the turn
   * (`going_away`, too many turns, a bad header…). The turn records `stoppedCode` and a
   * `turn_stopped` output says so. If it is the open turn, nothing more is written for it:
   * `sendAudio` drops its frames (`framesDropped`), `endTurn` closes it without a FIN. A turn
   * already finished (stopped after its FIN, before the server confirmed it) only records the
   * code. Unknown streams, confirmed turns and a second stop of the same stream are ignored.
   */
  handleStreamStopped(_now: number, stream: OutStream, code: number): void {
    let index: number | undefined;
    const open = this.sending;
    if (open && open.stream === stream) {
      if (open.stopped) return;
      open.stopped = true;
      index = open.index;
    } else {
      index = this.finished.get(stream);
      if (index === undefined) return;
      this.finished.delete(stream);
    }
    const turn = this._turns[index];
    if (!turn) return;
    turn.stoppedCode = code;
    this.push({ type: 'turn_stopped', itemId: turn.itemId, code });
  }

  /** Asks the server to stop the current response (it resets the stream: `cancelled`). */
  cancelResponse(): void {
    const r = this.replies[this.replies.length - 1];
    const ev: ClientEvent = { type: 'response.cancel' };
    if (r && !r.ended) ev.response_id = r.stats.responseId;
    this.send(ev);
  }

  // ---- the agent's audio ----

  /**
   * Bytes on a stream the server opened (the first call opens it). A stream that breaks a rule
   * (docs/PROTOCOL.md, "Audio streams": malformed framing or header, a kind or rate the client
   * does not take, `pts` not increasing) is stopped with its code and reported as a `problem`;
   * its response plays what arrived, and later bytes on it are dropped.
   */
  handleStreamData(now: number, stream: InStream, bytes: Uint8Array): void {
    if (this.refused.has(stream)) return;
    let entry = this.inbound.get(stream);
    if (!entry) {
      entry = { decoder: new AudioStreamDecoder(), reply: null, lastPts: null };
      this.inbound.set(stream, entry);
    }
    entry.decoder.push(bytes);
    for (;;) {
      const cur = this.inbound.get(stream);
      if (!cur) return;
      const r = cur.decoder.poll();
      if (!r.ok) {
        this.refuse(stream, r.error.code, `agent audio stream: ${r.error.message}`);
        return;
      }
      if (!r.item) return;
      if (r.item.type === 'header') {
        this.onReplyHeader(now, stream, r.item.kind, r.item.header);
      } else if (cur.lastPts !== null && r.item.pts <= cur.lastPts) {
        this.refuse(stream, Code.ProtocolViolation, `agent audio frame pts ${r.item.pts} is not after the previous frame's (${cur.lastPts})`);
        return;
      } else {
        cur.lastPts = r.item.pts;
        this.onReplyFrame(now, stream, r.item.pts, r.item.payload);
      }
    }
  }

  /**
   * The server finished a response stream: play out what is buffered. A stream that ends
   * inside its header or a frame is a `protocol_violation` (what arrived whole still plays).
   */
  handleStreamFin(_now: number, stream: InStream): void {
    if (this.refused.delete(stream)) return;
    const entry = this.inbound.get(stream);
    this.inbound.delete(stream);
    if (entry && entry.decoder.pending() > 0) {
      const where = entry.reply ? 'a frame' : 'its header';
      this.problem('protocol_violation', `agent audio stream ended inside ${where} (${entry.decoder.pending()} bytes)`);
    }
    this.endReply(stream);
  }

  /**
   * The server reset a response stream: cancelled (stop playing at once) or failed (play what
   * arrived).
   */
  handleStreamReset(now: number, stream: InStream, code: number): void {
    this.inbound.delete(stream);
    this.refused.delete(stream);
    const r = this.replyByStream(stream);
    if (!r) return;
    r.ended = true;
    if (r.stats.interrupt) {
      r.stats.interrupt.resetAt ??= now;
    } else if (code === Code.Cancelled) {
      if (!done(r.state)) this.flushReply(r, 'cancelled');
    } else if (!done(r.state)) {
      this.push({ type: 'playout_finish', responseId: r.stats.responseId });
    }
  }

  /** A snapshot of the worklet's playout (on every state change, and periodically). */
  handlePlayout(now: number, snap: PlayoutSnapshot): void {
    const r = this.reply(snap.responseId);
    if (!r || done(r.state)) return;
    const before = r.state;
    r.state = snap.state;
    r.played = snap.played;
    r.buffered = snap.buffered;
    r.stats.playedMs = ms(snap.played);
    r.stats.bufferedMs = ms(snap.buffered);
    r.stats.underruns = snap.underruns;
    r.stats.stallMs = ms(snap.stalled);
    if (snap.played > 0) r.stats.firstAudioAt ??= now;
    if (before === snap.state) return;
    const id = r.stats.responseId;
    const playedMs = r.stats.playedMs;
    if (snap.state === 'playing') {
      this.push({ type: 'playback', change: before === 'stalled' ? 'resumed' : 'started', responseId: id, playedMs });
    } else if (snap.state === 'stalled') {
      this.push({ type: 'playback', change: 'underrun', responseId: id, playedMs });
    } else if (snap.state === 'finished') {
      this.push({ type: 'playback', change: 'ended', responseId: id, playedMs, reason: r.stats.status === 'failed' ? 'failed' : 'finished' });
    }
    // Report at once when playback starts, stalls or ends, so the server's cursor estimate
    // never drifts through a state change; otherwise on the timer.
    if (snap.state !== 'flushed') this.report(now);
  }

  /**
   * Barge-in. The shell has already silenced the output and flushed the playout (the next
   * rendered quantum is silent) and passes the exact samples played; the session sends
   * `conversation.item.truncate` with that position and STOP_SENDING (`cancelled`) on the
   * response stream. Returns the played position in ms, or `null` if no response was playing.
   */
  interrupt(now: number, playedSamples?: number): number | null {
    const r = this.replies[this.replies.length - 1];
    if (!r || r.stats.interrupt || done(r.state)) return null;
    if (playedSamples !== undefined) r.played = playedSamples;
    const playedMs = ms(r.played);
    let unplayedBytes = 0;
    for (const [pts, bytes] of r.frames) if (pts >= r.played) unplayedBytes += bytes;
    r.stats.playedMs = playedMs;
    r.stats.bufferedMs = 0;
    r.stats.interrupt = { at: now, playedMs, unplayedBytes };
    this.flushReply(r, 'interrupted');
    this.send({
      type: 'conversation.item.truncate',
      item_id: r.stats.itemId,
      content_index: 0,
      audio_end_ms: playedMs,
    });
    if (r.stream !== null && !r.ended) {
      this.push({ type: 'stop_sending', stream: r.stream, code: Code.Cancelled });
    }
    return playedMs;
  }

  // ---- control ----

  /** Bytes received on the control stream. */
  handleControl(now: number, bytes: Uint8Array): void {
    this.events.push(bytes);
    for (let d = this.events.poll(); d; d = this.events.poll()) {
      if (d.type === 'skipped') {
        this.problem('event_too_large', `server event of ${d.length} bytes skipped`);
        continue;
      }
      const parsed = parseServerEvent(d.body);
      if (parsed.ok) this.onEvent(now, parsed.event);
      // A newer server's event: note it and go on.
      else this.problem(parsed.error.code, `server event: ${parsed.error.message}`);
    }
  }

  /** When {@link handleTimeout} wants to run next (same clock as `now`), or `null`. */
  pollTimeout(): number | null {
    if (this.nextReport === null) return this.nextPing;
    if (this.nextPing === null) return this.nextReport;
    return Math.min(this.nextReport, this.nextPing);
  }

  /** Sends the periodic playback report and the `voq.ping` when due. */
  handleTimeout(now: number): void {
    if (this.nextReport !== null && this.nextReport <= now) this.report(now);
    if (this.nextPing !== null && this.nextPing <= now) this.ping(now);
  }

  /**
   * Smoothed round-trip time of `voq.ping` → `voq.pong` on the control stream (ms), or `null`
   * before the first answer. It includes the server's (tiny) event handling and any queueing
   * behind other data on the control stream.
   */
  get rttMs(): number | null {
    return this._rttMs;
  }

  private ping(now: number): void {
    const interval = this.config.pingIntervalMs;
    if (interval === null) {
      this.nextPing = null;
      return;
    }
    this.pingId += 1;
    this.pingsInFlight.set(this.pingId, now);
    // Unanswered pings are forgotten after a few intervals (a server that does not know them).
    for (const [id, at] of this.pingsInFlight) if (now - at > 10 * interval) this.pingsInFlight.delete(id);
    this.send({ type: 'voq.ping', id: this.pingId });
    this.nextPing = now + interval;
  }

  /** The next output, or `null`. */
  poll(): ClientOutput | null {
    if (this.outHead >= this.out.length) {
      if (this.out.length) {
        this.out = [];
        this.outHead = 0;
      }
      return null;
    }
    const o = this.out[this.outHead] ?? null;
    this.outHead += 1;
    return o;
  }

  /** Outputs queued and not yet polled. */
  get queued(): number {
    return this.out.length - this.outHead;
  }

  // ---- what happened ----

  /** The session as the server described it (after `session.created`/`session.updated`). */
  get session(): SessionInfo | null {
    return this._session;
  }

  get turns(): readonly TurnStats[] {
    return this._turns;
  }

  get responses(): ResponseStats[] {
    return this.replies.map((r) => r.stats);
  }

  /** The response being received or played, if any. */
  get currentResponse(): ResponseStats | null {
    const r = this.replies[this.replies.length - 1];
    return r && !done(r.state) ? r.stats : null;
  }

  /** Whether the latest response has been played (or flushed) to its end. */
  get playbackDone(): boolean {
    const r = this.replies[this.replies.length - 1];
    return !!r && r.ended && done(r.state);
  }

  get bufferedMs(): number {
    const r = this.replies[this.replies.length - 1];
    return r && !done(r.state) ? ms(r.buffered) : 0;
  }

  // ---- internals ----

  private push(o: ClientOutput): void {
    this.out.push(o);
  }

  private send(event: ClientEvent): void {
    this.push({ type: 'control', bytes: encodeEvent(JSON.stringify(event)) });
  }

  /** Something the server sent that the session could not use: always the peer's doing. */
  private problem(code: ErrorCode, message: string): void {
    this.push({ type: 'problem', code, message });
  }

  /**
   * Stops a stream of the server that broke a rule (STOP_SENDING with `code`, a `problem` with
   * its `error.code`) and drops whatever still arrives on it; its response plays what arrived.
   */
  private refuse(stream: InStream, code: Code, message: string): void {
    this.problem(problemCode(code), message);
    this.push({ type: 'stop_sending', stream, code });
    this.inbound.delete(stream);
    // Bounded like `finished`: a server that opens stream after bad stream without ending them
    // must not grow the bookkeeping (a forgotten one is refused again if more arrives on it).
    const MAX_REFUSED = 64;
    if (this.refused.size >= MAX_REFUSED) this.refused.delete(this.refused.values().next().value as InStream);
    this.refused.add(stream);
    this.endReply(stream);
  }

  /** The response on `stream` gets no more audio: play out what is queued. */
  private endReply(stream: InStream): void {
    const r = this.replyByStream(stream);
    if (r && !r.ended) {
      r.ended = true;
      if (!done(r.state)) this.push({ type: 'playout_finish', responseId: r.stats.responseId });
    }
  }

  private rememberFinished(stream: OutStream, index: number): void {
    const MAX_UNCONFIRMED = 64;
    if (this.finished.size >= MAX_UNCONFIRMED) {
      // The oldest: streams are numbered in order.
      const oldest = Math.min(...this.finished.keys());
      this.finished.delete(oldest);
    }
    this.finished.set(stream, index);
  }

  private replyByStream(stream: InStream): Reply | undefined {
    return this.replies.find((r) => r.stream === stream);
  }

  private reply(responseId: string): Reply | undefined {
    return this.replies.find((r) => r.stats.responseId === responseId);
  }

  private flushReply(r: Reply, reason: 'interrupted' | 'cancelled' | 'superseded'): void {
    r.state = 'flushed';
    r.buffered = 0;
    this.push({ type: 'playout_flush', responseId: r.stats.responseId });
    this.push({ type: 'playback', change: 'ended', responseId: r.stats.responseId, playedMs: ms(r.played), reason });
  }

  private newReply(responseId: string, itemId: string, codec: Codec): Reply {
    // One response plays at a time: a new one supersedes whatever is still playing.
    const old = this.replies[this.replies.length - 1];
    if (old && !done(old.state)) this.flushReply(old, 'superseded');
    const r: Reply = {
      stats: {
        responseId,
        itemId,
        bytesReceived: 0,
        framesReceived: 0,
        playedMs: 0,
        bufferedMs: 0,
        underruns: 0,
        stallMs: 0,
      },
      stream: null,
      codec,
      state: 'buffering',
      played: 0,
      buffered: 0,
      frames: [],
      ended: false,
      receivedEnd: 0,
    };
    this.replies.push(r);
    this.push({ type: 'playout_start', responseId, codec, startThresholdMs: this.config.startThresholdMs });
    return r;
  }

  private onReplyHeader(now: number, stream: InStream, kind: StreamKind, header: AudioHeader): void {
    if (kind !== StreamKind.AgentAudio) {
      // A user-audio stream from the server: the wrong kind for the direction.
      this.refuse(stream, Code.StreamRefused, 'refused server stream: servers only open agent audio streams');
      return;
    }
    const codec = header.codec === 'pcm16' || header.codec === 'opus' ? header.codec : null;
    const responseId = header.response_id;
    if (!codec || responseId === undefined || header.sample_rate !== SAMPLE_RATE) {
      this.refuse(stream, Code.BadStreamHeader, `refused server stream: bad header ${JSON.stringify(header)}`);
      return;
    }
    let r = this.reply(responseId);
    if (!r) {
      r = this.newReply(responseId, header.item_id, codec);
    } else if (r.codec !== codec && !done(r.state)) {
      // The stream says what it carries; restart the (still empty) playout with that codec.
      this.push({ type: 'playout_start', responseId, codec, startThresholdMs: this.config.startThresholdMs });
    }
    r.stream = stream;
    r.codec = codec;
    const entry = this.inbound.get(stream);
    if (entry) entry.reply = { responseId, codec };
    this.nextReport ??= now + this.reportInterval;
  }

  private onReplyFrame(now: number, stream: InStream, pts: number, payload: Uint8Array): void {
    const info = this.inbound.get(stream)?.reply;
    if (!info) return;
    const r = this.reply(info.responseId);
    if (!r) return;
    const wireBytes = payload.length + FRAME_OVERHEAD;
    r.stats.bytesReceived += wireBytes;
    r.stats.framesReceived += 1;
    r.stats.firstFrameAt ??= now;
    if (r.stats.interrupt) {
      // In flight when the user interrupted: received, never played.
      r.stats.interrupt.unplayedBytes += wireBytes;
      return;
    }
    if (done(r.state)) return;
    r.frames.push([pts, wireBytes]);
    const samples = info.codec === 'pcm16' ? payload.length / 2 : (SAMPLE_RATE * FRAME_MS) / 1000;
    r.receivedEnd = Math.max(r.receivedEnd, pts + samples);
    this.push({ type: 'reply_frame', responseId: info.responseId, codec: info.codec, pts, payload });
  }

  private onEvent(now: number, event: ServerEvent): void {
    switch (event.type) {
      case 'session.created':
      case 'session.updated':
      case 'voq.session.resumed':
        this.reportInterval = Math.max(10, event.session.voq.played_report_interval_ms);
        this._session = event.session;
        if (this.nextPing === null && this.config.pingIntervalMs !== null) this.ping(now);
        break;
      case 'voq.pong': {
        const sent = this.pingsInFlight.get(event.id);
        if (sent !== undefined) {
          this.pingsInFlight.delete(event.id);
          const sample = Math.max(0, now - sent);
          // RFC 9002's smoothing, as the server's QUIC and the WebSocket mux do.
          this._rttMs = this._rttMs === null ? sample : (7 * this._rttMs + sample) / 8;
        }
        break;
      }
      case 'input_audio_buffer.committed': {
        const index = this._turns.findIndex((x) => x.itemId === event.item_id);
        const t = this._turns[index];
        if (t) {
          // Confirmed: the server will not stop this turn's stream any more.
          for (const [stream, i] of this.finished) if (i === index) this.finished.delete(stream);
          t.framesConfirmed = event.voq.frames;
          t.audioMsConfirmed = event.voq.audio_ms;
          t.bytesConfirmed = event.voq.bytes;
          t.confirmedAt = now;
        } else {
          // Server VAD: the server names the items it cut from our stream.
          this._turns.push({
            itemId: event.item_id,
            framesSent: 0,
            bytesSent: 0,
            audioMsSent: 0,
            framesDropped: 0,
            framesConfirmed: event.voq.frames,
            audioMsConfirmed: event.voq.audio_ms,
            bytesConfirmed: event.voq.bytes,
            confirmedAt: now,
          });
        }
        break;
      }
      case 'response.created':
        if (!this.reply(event.response.id)) {
          this.newReply(event.response.id, responseItemId(event.response), this.config.outputCodec);
        }
        break;
      case 'response.done': {
        const r = this.reply(event.response.id);
        if (r) {
          r.stats.status = event.response.status;
          if (r.stream === null && !r.ended && event.response.status !== 'completed' && !done(r.state)) {
            // Ended before its stream reached us (a stream reset before its header arrived is
            // never seen): nothing more will come for it.
            r.ended = true;
            this.push({ type: 'playout_finish', responseId: r.stats.responseId });
          }
        }
        break;
      }
      case 'conversation.item.truncated': {
        const i = this.replies.find((r) => r.stats.itemId === event.item_id)?.stats.interrupt;
        if (i) {
          i.truncatedAudioEndMs = event.audio_end_ms;
          i.truncatedAt = now;
        }
        break;
      }
      default:
        break;
    }
    this.push({ type: 'event', event });
  }

  private report(now: number): void {
    const r = this.replies[this.replies.length - 1];
    if (!r) {
      this.nextReport = null;
      return;
    }
    this.send({
      type: 'output_audio_buffer.played',
      response_id: r.stats.responseId,
      played_ms: ms(r.played),
      buffered_ms: done(r.state) ? 0 : ms(r.buffered),
    });
    this.nextReport = done(r.state) ? null : now + this.reportInterval;
  }
}
