/**
 * Reconnection and turn replay, sans-IO: when to dial again, when to give up, and which user
 * turns to send again on the next connection.
 *
 * Drain rule, as for {@link ClientSession}: **after every input, drain {@link Reconnector.poll}
 * until it returns `null`; wake at {@link Reconnector.pollTimeout}** (a time on the same clock as
 * the `now` arguments, in ms) and call {@link Reconnector.handleTimeout}. No timers, promises or
 * I/O here: the shell ({@link VoqClient}) dials, sends and keeps the clock.
 *
 * # The methods, by kind
 *
 * - **Inputs** (`handle*`), from the connection: {@link Reconnector.handleConnected} (a dial
 *   succeeded, the first one included), {@link Reconnector.handleLost},
 *   {@link Reconnector.handleDialFailed}, {@link Reconnector.handleGoingAway} (the server's
 *   `going_away` error), {@link Reconnector.handleIdle} (nothing is being said or played);
 *   from the server's answers about turns: {@link Reconnector.handleCommitted},
 *   {@link Reconnector.handleTurnStopped}; from the clock: {@link Reconnector.handleTimeout}.
 * - **Bookkeeping**, what the shell sent in the current session: {@link Reconnector.turnStarted},
 *   {@link Reconnector.turnAudio}, {@link Reconnector.turnEnded},
 *   {@link Reconnector.turnDiscarded}.
 * - **Commands**: {@link Reconnector.close}.
 * - **Outputs**: {@link Reconnector.poll}, {@link Reconnector.pollTimeout}.
 *
 * # The policy
 *
 * A lost connection starts a new session at once (`replay`: the kept turns, to be started again
 * in it, in the order they were first started) and then up to `maxAttempts` dials, the n-th after
 * `backoffMs[n - 1]` (the last entry repeats): `wait`, then at that time `dial`. A failed dial
 * waits for the next; after the last one, `give_up`. A planned move (`going_away`, once idle:
 * `leave`) dials the first time without waiting. With `enabled: false` a lost connection is
 * `give_up` at once (`kind: 'disabled'`). After `give_up` or {@link Reconnector.close}, every
 * input is ignored.
 *
 * **Kept turns.** A push-to-talk turn's packets are kept from `turnStarted` until the server
 * confirms the turn (`input_audio_buffer.committed`), so a turn cut by a lost connection is sent
 * again, whole. A turn the server stopped (STOP_SENDING: it refused it) is forgotten at once: it
 * is not sent again — unless the code was `going_away`: the server is draining, which is no
 * fault of the turn, so it stays kept (audio given after the stop included) and goes, whole, to
 * the next server. At most `maxTurns` ended turns and `maxBytes` of audio are kept; beyond
 * either, the oldest ended turns are forgotten (`forget`) — the open turn never is.
 */

import { Code } from './errors.js';

/** One encoded frame of user audio: payload and its length in samples. */
export type Packet = readonly [payload: Uint8Array, samples: number];

export interface ReconnectConfig {
  /** Reconnect at all (default true). */
  enabled: boolean;
  /** Dials after a lost connection before giving up (default 5). */
  maxAttempts: number;
  /** Wait before the n-th dial: `backoffMs[n - 1]`, the last entry for every later one. */
  backoffMs: readonly number[];
  /** Ended, unconfirmed turns kept for a resend (default 64, as the session's stop bookkeeping). */
  maxTurns: number;
  /** Payload bytes kept for resends, the open turn included (default 16 MiB: ~5.8 min of pcm16). */
  maxBytes: number;
}

export const DEFAULT_RECONNECT_CONFIG: ReconnectConfig = {
  enabled: true,
  maxAttempts: 5,
  backoffMs: [250, 500, 1000, 2000, 4000, 8000],
  maxTurns: 64,
  maxBytes: 16 * 1024 * 1024,
};

/** A kept turn to start again in the new session (`ended`: and FIN it). */
export interface ReplayTurn<T> {
  /** The shell's handle, as given to {@link Reconnector.turnStarted}. */
  turn: T;
  /** Its item id in the lost session. */
  itemId: string;
  /** Its audio, in order (the reconnector's own list: read it before the next input). */
  packets: readonly Packet[];
  ended: boolean;
}

/** What the reconnector asks its shell to do. */
export type ReconnectAction<T> =
  /**
   * Move off this server now (it announced `going_away` and the client is idle): close the
   * connection. A `replay` and a `wait` follow, as for a lost connection.
   */
  | { type: 'leave'; reason: string }
  /**
   * The connection is gone: start a new session and start these turns again in it, in this
   * order (each ended one with its FIN), telling {@link Reconnector.turnStarted} their new item
   * ids. The session's outputs queue until a dial succeeds.
   */
  | { type: 'replay'; turns: Array<ReplayTurn<T>> }
  /** Dial attempt `attempt` comes at `untilMs` (`transport.reconnecting`). */
  | { type: 'wait'; attempt: number; delayMs: number; untilMs: number; reason: string }
  /** Dial now; answer with {@link Reconnector.handleConnected} or {@link Reconnector.handleDialFailed}. */
  | { type: 'dial'; attempt: number }
  /**
   * Stop: reconnecting is off (`disabled`), or every attempt failed (`exhausted`, `reason`: the
   * last failure). Nothing more comes.
   */
  | { type: 'give_up'; kind: 'disabled' | 'exhausted'; reason: string; attempts: number }
  /** A kept turn dropped to stay within `maxTurns`/`maxBytes`: it will not be sent again. */
  | { type: 'forget'; turn: T; itemId: string; limit: 'turns' | 'bytes' };

export type ReconnectState = 'idle' | 'connected' | 'waiting' | 'dialing' | 'gave_up' | 'closed';

interface Kept<T> {
  turn: T;
  itemId: string;
  packets: Packet[];
  bytes: number;
  ended: boolean;
}

/** The reconnection policy and the turns it may send again; `T` is the shell's turn handle. */
export class Reconnector<T = unknown> {
  readonly config: ReconnectConfig;
  private _state: ReconnectState = 'idle';
  private _attempt = 0;
  private deadline: number | null = null;
  private planned = false;
  private goingAway = false;
  private _reconnects = 0;
  private kept: Array<Kept<T>> = [];
  private bytes = 0;
  private out: Array<ReconnectAction<T>> = [];

  constructor(config: Partial<ReconnectConfig> = {}) {
    this.config = { ...DEFAULT_RECONNECT_CONFIG, ...config };
  }

  // ---- the connection ----

  /** A dial succeeded (the first one, or a reconnect): connected, the attempt count starts over. */
  handleConnected(_now: number): void {
    if (this._state === 'dialing') this._reconnects += 1;
    else if (this._state !== 'idle') return;
    this._state = 'connected';
    this._attempt = 0;
    this.deadline = null;
    this.goingAway = false;
  }

  /**
   * The connection is gone (`planned`: the client is leaving on purpose, so the first dial comes
   * at once). Ignored unless connected.
   */
  handleLost(now: number, reason: string, planned = false): void {
    if (this._state !== 'connected') return;
    this.goingAway = false;
    if (!this.config.enabled) {
      this.giveUp('disabled', reason);
      return;
    }
    this.push({ type: 'replay', turns: this.kept.map((k) => ({ turn: k.turn, itemId: k.itemId, packets: k.packets, ended: k.ended })) });
    this.planned = planned;
    this.next(now, reason);
  }

  /** The dial that `dial` asked for failed with `reason`: wait for the next, or give up. */
  handleDialFailed(now: number, reason: string): void {
    if (this._state !== 'dialing') return;
    this.next(now, reason);
  }

  /** The server announced `going_away`: leave it at the next {@link handleIdle}. */
  handleGoingAway(_now: number): void {
    if (this._state === 'connected' && this.config.enabled) this.goingAway = true;
  }

  /** Nothing is being said, sent or played: a server that is going away is left now (`leave`). */
  handleIdle(now: number): void {
    if (this._state !== 'connected' || !this.goingAway) return;
    const reason = 'the server is going away';
    this.push({ type: 'leave', reason });
    this.handleLost(now, reason, true);
  }

  /** When {@link handleTimeout} wants to run next (same clock as `now`), or `null`. */
  pollTimeout(): number | null {
    return this.deadline;
  }

  /** Dials when the wait is over. */
  handleTimeout(now: number): void {
    if (this._state !== 'waiting' || this.deadline === null || now < this.deadline) return;
    this.deadline = null;
    this._state = 'dialing';
    this.push({ type: 'dial', attempt: this._attempt });
  }

  /** The client is closing: nothing more comes out, every later input is ignored. */
  close(): void {
    this._state = 'closed';
    this.deadline = null;
    this.kept = [];
    this.bytes = 0;
    this.out = [];
  }

  // ---- turns ----

  /**
   * A push-to-talk turn was started in the current session as `itemId`; its audio is kept from
   * now on. For a turn of a `replay`, this records its new item id (its audio is kept already).
   */
  turnStarted(turn: T, itemId: string): void {
    if (this.done) return;
    const k = this.find(turn);
    if (k) k.itemId = itemId;
    else this.kept.push({ turn, itemId, packets: [], bytes: 0, ended: false });
  }

  /** The audio kept of `turn` (the reconnector's own list: read it before the next input). */
  packetsOf(turn: T): readonly Packet[] | null {
    return this.done ? null : (this.find(turn)?.packets ?? null);
  }

  /** A packet of a started turn went to the session. */
  turnAudio(turn: T, payload: Uint8Array, samples: number): void {
    const k = this.done ? undefined : this.find(turn);
    if (!k) return;
    k.packets.push([payload, samples]);
    k.bytes += payload.length;
    this.bytes += payload.length;
    this.enforceLimits();
  }

  /** The turn was ended (FIN): kept until {@link handleCommitted} or {@link handleTurnStopped}. */
  turnEnded(turn: T): void {
    const k = this.done ? undefined : this.find(turn);
    if (!k) return;
    k.ended = true;
    this.enforceLimits();
  }

  /** The turn was discarded (`clearInput`): nothing of it is kept. */
  turnDiscarded(turn: T): void {
    const i = this.kept.findIndex((k) => k.turn === turn);
    if (i >= 0) this.remove(i);
  }

  /** `input_audio_buffer.committed` for `itemId`: the server has the turn; it is not kept any more. */
  handleCommitted(itemId: string): void {
    const i = this.kept.findIndex((k) => k.itemId === itemId);
    if (i >= 0) this.remove(i);
  }

  /**
   * The server stopped the turn `itemId`'s stream with `code` (STOP_SENDING: it refused the
   * turn): it is forgotten, not sent again after a reconnect. `going_away` is the exception:
   * the server is shutting down, not refusing the turn, so the turn stays kept (with the audio
   * that still comes for it) and is sent again to the next server.
   */
  handleTurnStopped(itemId: string, code: number): void {
    if (code === Code.GoingAway) return;
    this.handleCommitted(itemId);
  }

  // ---- outputs ----

  /** The next action, or `null`. */
  poll(): ReconnectAction<T> | null {
    return this.out.shift() ?? null;
  }

  // ---- what happened ----

  get state(): ReconnectState {
    return this._state;
  }

  /** The current (or last) dial attempt since the connection was lost; 0 while connected. */
  get attempt(): number {
    return this._attempt;
  }

  /** Successful reconnects. */
  get reconnects(): number {
    return this._reconnects;
  }

  /** Turns kept for a resend: unconfirmed ended ones and the open one. */
  get keptTurns(): number {
    return this.kept.length;
  }

  /** Payload bytes kept for resends. */
  get keptBytes(): number {
    return this.bytes;
  }

  // ---- internals ----

  private get done(): boolean {
    return this._state === 'gave_up' || this._state === 'closed';
  }

  private push(a: ReconnectAction<T>): void {
    this.out.push(a);
  }

  private find(turn: T): Kept<T> | undefined {
    return this.kept.find((k) => k.turn === turn);
  }

  private remove(i: number): Kept<T> | undefined {
    const [k] = this.kept.splice(i, 1);
    if (k) this.bytes -= k.bytes;
    return k;
  }

  /** The next dial attempt after a loss or a failure, or the end. */
  private next(now: number, reason: string): void {
    const attempt = this._attempt + 1;
    if (attempt > this.config.maxAttempts) {
      this.giveUp('exhausted', reason);
      return;
    }
    this._attempt = attempt;
    const b = this.config.backoffMs;
    const delayMs = attempt === 1 && this.planned ? 0 : (b[Math.min(attempt - 1, b.length - 1)] ?? 1000);
    this._state = 'waiting';
    this.deadline = now + delayMs;
    this.push({ type: 'wait', attempt, delayMs, untilMs: this.deadline, reason });
  }

  private giveUp(kind: 'disabled' | 'exhausted', reason: string): void {
    this._state = 'gave_up';
    this.deadline = null;
    this.kept = [];
    this.bytes = 0;
    this.push({ type: 'give_up', kind, reason, attempts: this._attempt });
  }

  /** Forgets the oldest ended turns while over `maxTurns` or `maxBytes`; the open turn stays. */
  private enforceLimits(): void {
    let ended = 0;
    for (const k of this.kept) if (k.ended) ended += 1;
    for (;;) {
      const limit = ended > this.config.maxTurns ? 'turns' : this.bytes > this.config.maxBytes ? 'bytes' : null;
      if (!limit) return;
      const i = this.kept.findIndex((k) => k.ended);
      if (i < 0) return;
      const k = this.remove(i);
      ended -= 1;
      if (k) this.push({ type: 'forget', turn: k.turn, itemId: k.itemId, limit });
    }
  }
}
