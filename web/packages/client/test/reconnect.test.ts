import { describe, expect, it } from 'vitest';
import { Code } from '../src/errors.js';
import { Reconnector } from '../src/reconnect.js';
import type { ReconnectAction, ReconnectConfig } from '../src/reconnect.js';

// The clock is a plain number: every input takes `now`, every deadline is read from
// pollTimeout() and fed back to handleTimeout(), as the shell's one timer would.

function drain<T>(r: Reconnector<T>): Array<ReconnectAction<T>> {
  const out: Array<ReconnectAction<T>> = [];
  for (let a = r.poll(); a; a = r.poll()) out.push(a);
  return out;
}

/** A connected reconnector (its first dial succeeded at t = 0). */
function connected(config: Partial<ReconnectConfig> = {}): Reconnector<string> {
  const r = new Reconnector<string>(config);
  r.handleConnected(0);
  return r;
}

const packet = (n: number, bytes = 960) => [new Uint8Array(bytes).fill(n), 480] as const;

/** A turn `name` started as `itemId` with `frames` packets (frame i filled with i), ended or not. */
function turn(r: Reconnector<string>, name: string, itemId: string, frames: number, ended = true): void {
  r.turnStarted(name, itemId);
  for (let i = 0; i < frames; i++) r.turnAudio(name, ...packet(i));
  if (ended) r.turnEnded(name);
}

/** Runs the clock to the next deadline; returns that time and what came out. */
function fire<T>(r: Reconnector<T>): { at: number; actions: Array<ReconnectAction<T>> } {
  const at = r.pollTimeout();
  if (at === null) throw new Error('no deadline');
  r.handleTimeout(at);
  return { at, actions: drain(r) };
}

describe('Reconnector', () => {
  it('backs off 250, 500, 1000, 2000, 4000 ms, dials at each deadline, and gives up after 5', () => {
    const r = connected();
    r.handleLost(1000, 'network');
    expect(drain(r)).toEqual([
      { type: 'replay', turns: [] },
      { type: 'wait', attempt: 1, delayMs: 250, untilMs: 1250, reason: 'network' },
    ]);
    expect(r.state).toBe('waiting');
    // Early: nothing.
    r.handleTimeout(1249);
    expect(drain(r)).toEqual([]);
    let now = 1000;
    const waits: number[] = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      const { at, actions } = fire(r);
      waits.push(at - now);
      expect(actions).toEqual([{ type: 'dial', attempt }]);
      expect(r.state).toBe('dialing');
      expect(r.pollTimeout()).toBeNull(); // nothing to wake for while a dial runs
      now = at + 40; // the dial fails 40 ms later
      r.handleDialFailed(now, `refused ${attempt}`);
      const next = drain(r);
      if (attempt < 5) {
        expect(next).toEqual([{ type: 'wait', attempt: attempt + 1, delayMs: [500, 1000, 2000, 4000][attempt - 1], untilMs: r.pollTimeout(), reason: `refused ${attempt}` }]);
      } else {
        expect(next).toEqual([{ type: 'give_up', kind: 'exhausted', reason: 'refused 5', attempts: 5 }]);
      }
    }
    expect(waits).toEqual([250, 500, 1000, 2000, 4000]);
    expect(r.state).toBe('gave_up');
    expect(r.pollTimeout()).toBeNull();
    expect(r.reconnects).toBe(0);
  });

  it('repeats the last backoff beyond the table, and takes maxAttempts and backoffMs from its config', () => {
    const r = connected({ maxAttempts: 8 });
    r.handleLost(0, 'x');
    drain(r);
    const delays: number[] = [];
    for (;;) {
      const { at, actions } = fire(r);
      expect(actions[0]?.type).toBe('dial');
      r.handleDialFailed(at, 'x'); // fails at once
      const [a] = drain(r);
      if (a?.type !== 'wait') {
        expect(a).toMatchObject({ type: 'give_up', attempts: 8 });
        break;
      }
      delays.push(a.delayMs);
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 8000, 8000]);
    const custom = connected({ backoffMs: [10, 20], maxAttempts: 3 });
    custom.handleLost(0, 'x');
    expect(drain(custom)[1]).toMatchObject({ type: 'wait', delayMs: 10, untilMs: 10 });
  });

  it('a successful dial reconnects and starts the attempt count over', () => {
    const r = connected();
    r.handleLost(0, 'network');
    drain(r);
    fire(r);
    r.handleDialFailed(300, 'refused');
    expect(drain(r)).toMatchObject([{ type: 'wait', attempt: 2, untilMs: 800 }]);
    fire(r);
    r.handleConnected(850);
    expect(drain(r)).toEqual([]);
    expect(r.state).toBe('connected');
    expect(r.attempt).toBe(0);
    expect(r.reconnects).toBe(1);
    expect(r.pollTimeout()).toBeNull();
    // The next loss starts again from the first backoff.
    r.handleLost(5000, 'again');
    expect(drain(r)[1]).toEqual({ type: 'wait', attempt: 1, delayMs: 250, untilMs: 5250, reason: 'again' });
  });

  it('going_away: leaves once idle, dials at once, then backs off as usual', () => {
    const r = connected();
    r.handleGoingAway(100);
    expect(drain(r)).toEqual([]); // not idle yet: the reply plays on
    r.handleIdle(2000);
    expect(drain(r)).toEqual([
      { type: 'leave', reason: 'the server is going away' },
      { type: 'replay', turns: [] },
      { type: 'wait', attempt: 1, delayMs: 0, untilMs: 2000, reason: 'the server is going away' },
    ]);
    expect(fire(r)).toEqual({ at: 2000, actions: [{ type: 'dial', attempt: 1 }] });
    r.handleDialFailed(2010, 'refused');
    expect(drain(r)).toEqual([{ type: 'wait', attempt: 2, delayMs: 500, untilMs: 2510, reason: 'refused' }]);
    fire(r);
    r.handleConnected(2600);
    // Idle on the new server: it did not announce anything, so nothing happens.
    r.handleIdle(2700);
    expect(drain(r)).toEqual([]);
    expect(r.state).toBe('connected');
  });

  it('going_away is forgotten when the connection drops first (an unplanned loss, with backoff)', () => {
    const r = connected();
    r.handleGoingAway(0);
    r.handleLost(10, 'network');
    expect(drain(r)[1]).toMatchObject({ type: 'wait', delayMs: 250 });
    fire(r);
    r.handleConnected(300);
    r.handleIdle(400);
    expect(drain(r)).toEqual([]);
  });

  it('reconnect disabled: a lost connection gives up at once, going_away is ignored', () => {
    const r = connected({ enabled: false });
    turn(r, 'a', 'item_c1', 2);
    r.handleGoingAway(0);
    r.handleIdle(1);
    expect(drain(r)).toEqual([]);
    r.handleLost(5, 'closed by peer');
    expect(drain(r)).toEqual([{ type: 'give_up', kind: 'disabled', reason: 'closed by peer', attempts: 0 }]);
    expect(r.keptTurns).toBe(0);
  });

  it('replays the unconfirmed turns in the order they were started, then the open one, and renames them', () => {
    const r = connected();
    turn(r, 'a', 'item_c1', 3);
    turn(r, 'b', 'item_c2', 2);
    turn(r, 'c', 'item_c3', 1);
    r.handleCommitted('item_c2'); // confirmed: not kept
    turn(r, 'd', 'item_c4', 4, false); // still being spoken
    r.handleLost(100, 'network');
    const [replay] = drain(r);
    if (replay?.type !== 'replay') throw new Error('expected a replay');
    expect(replay.turns.map((t) => [t.turn, t.itemId, t.packets.length, t.ended])).toEqual([
      ['a', 'item_c1', 3, true],
      ['c', 'item_c3', 1, true],
      ['d', 'item_c4', 4, false],
    ]);
    // Whole and in order: packet i is filled with i.
    expect(replay.turns[0]!.packets.map(([p]) => p[0])).toEqual([0, 1, 2]);
    // The shell starts them again in the new session, which numbers them afresh.
    r.turnStarted('a', 'item_c1');
    r.turnStarted('c', 'item_c2');
    r.turnStarted('d', 'item_c3');
    // The open turn goes on while reconnecting, and ends.
    r.turnAudio('d', ...packet(4));
    r.turnEnded('d');
    expect(r.keptTurns).toBe(3);
    // Confirmations name the new ids.
    r.handleCommitted('item_c2');
    expect(r.keptTurns).toBe(2);
    fire(r);
    r.handleConnected(400);
    r.handleLost(500, 'again');
    const [again] = drain(r);
    if (again?.type !== 'replay') throw new Error('expected a replay');
    expect(again.turns.map((t) => [t.turn, t.itemId, t.packets.length, t.ended])).toEqual([
      ['a', 'item_c1', 3, true],
      ['d', 'item_c3', 5, true],
    ]);
  });

  it('does not replay a turn the server stopped: ended before the stop, or still open', () => {
    const r = connected();
    turn(r, 'a', 'item_c1', 3); // ended, then refused before the server confirmed it
    turn(r, 'b', 'item_c2', 2);
    r.handleTurnStopped('item_c1', Code.StreamRefused);
    turn(r, 'c', 'item_c3', 2, false); // refused while the user is still talking
    r.handleTurnStopped('item_c3', Code.BadStreamHeader);
    r.turnAudio('c', ...packet(9)); // the shell no longer sends it; if it did, it is not kept
    r.turnEnded('c');
    expect(r.keptTurns).toBe(1);
    expect(r.keptBytes).toBe(2 * 960);
    r.handleLost(10, 'network');
    const [replay] = drain(r);
    expect(replay).toMatchObject({ type: 'replay', turns: [{ turn: 'b', itemId: 'item_c2', ended: true }] });
  });

  it('forgets a stopped turn whatever the code, except going_away', () => {
    const codes = Object.values(Code).filter((c) => c !== Code.GoingAway);
    expect(codes).toHaveLength(Object.keys(Code).length - 1);
    for (const code of codes) {
      const r = connected();
      turn(r, 'a', 'item_c1', 1);
      r.handleTurnStopped('item_c1', code);
      expect(r.keptTurns, `code ${code}`).toBe(0);
    }
  });

  it('replays a turn stopped with going_away (the server is draining), whole, to the next server', () => {
    const r = connected();
    r.handleGoingAway(0);
    turn(r, 'a', 'item_c1', 2); // ended, then stopped before the server confirmed it
    r.handleTurnStopped('item_c1', Code.GoingAway);
    turn(r, 'b', 'item_c2', 2, false); // stopped while the user is still talking
    r.handleTurnStopped('item_c2', Code.GoingAway);
    r.turnAudio('b', ...packet(7)); // the rest of the turn, which this server would not take
    r.turnEnded('b');
    expect(r.keptTurns).toBe(2);
    expect(r.keptBytes).toBe(5 * 960);
    expect(drain(r)).toEqual([]);
    // Idle: the client leaves the draining server and sends both turns to the next one.
    r.handleIdle(10);
    const [leave, replay, wait] = drain(r);
    expect(leave).toEqual({ type: 'leave', reason: 'the server is going away' });
    if (replay?.type !== 'replay') throw new Error('expected a replay');
    expect(replay.turns.map((t) => [t.turn, t.itemId, t.packets.map((p) => p[0][0]), t.ended])).toEqual([
      ['a', 'item_c1', [0, 1], true],
      ['b', 'item_c2', [0, 1, 7], true],
    ]);
    expect(wait).toMatchObject({ type: 'wait', attempt: 1, delayMs: 0 });
    // In the new session they are turns like any other: a later refusal with another code is final.
    fire(r);
    r.handleConnected(20);
    r.turnStarted('a', 'item_c1');
    r.turnStarted('b', 'item_c2');
    r.handleTurnStopped('item_c1', Code.StreamRefused);
    r.handleCommitted('item_c2');
    expect(r.keptTurns).toBe(0);
  });

  it('keeps at most maxTurns ended turns, forgetting the oldest; never the open one', () => {
    const r = connected({ maxTurns: 2 });
    turn(r, 'a', 'item_c1', 1);
    turn(r, 'b', 'item_c2', 1);
    turn(r, 'open', 'item_c3', 1, false);
    expect(drain(r)).toEqual([]);
    turn(r, 'c', 'item_c4', 1); // the open one is not ended: it does not count
    expect(drain(r)).toEqual([{ type: 'forget', turn: 'a', itemId: 'item_c1', limit: 'turns' }]);
    r.handleLost(0, 'x');
    const [replay] = drain(r);
    if (replay?.type !== 'replay') throw new Error('expected a replay');
    expect(replay.turns.map((t) => t.turn)).toEqual(['b', 'open', 'c']);
  });

  it('keeps at most maxBytes of audio: the open turn grows, the oldest ended turns go', () => {
    const r = connected({ maxBytes: 3000 });
    turn(r, 'a', 'item_c1', 1); // 960
    turn(r, 'b', 'item_c2', 1); // 1920
    turn(r, 'open', 'item_c3', 1, false); // 2880
    expect(drain(r)).toEqual([]);
    expect(r.keptBytes).toBe(2880);
    r.turnAudio('open', ...packet(1)); // 3840 > 3000
    expect(drain(r)).toEqual([{ type: 'forget', turn: 'a', itemId: 'item_c1', limit: 'bytes' }]);
    expect(r.keptBytes).toBe(2880);
    for (let i = 0; i < 5; i++) r.turnAudio('open', ...packet(i)); // the open turn alone is over
    expect(drain(r)).toEqual([{ type: 'forget', turn: 'b', itemId: 'item_c2', limit: 'bytes' }]);
    expect(r.keptTurns).toBe(1);
    expect(r.keptBytes).toBe(7 * 960); // kept whole, over the limit: it is being spoken
    r.handleLost(0, 'x');
    expect(drain(r)[0]).toMatchObject({ type: 'replay', turns: [{ turn: 'open', ended: false }] });
  });

  it('forgets discarded turns and ignores unknown ones', () => {
    const r = connected();
    turn(r, 'a', 'item_c1', 2, false);
    r.turnDiscarded('a');
    r.turnAudio('a', ...packet(1));
    r.turnEnded('a');
    r.handleCommitted('item_c9');
    r.handleTurnStopped('item_c9', Code.StreamRefused);
    r.turnDiscarded('zzz');
    expect(r.keptTurns).toBe(0);
    expect(r.keptBytes).toBe(0);
    expect(drain(r)).toEqual([]);
  });

  it('ignores every input after give_up', () => {
    const r = connected({ maxAttempts: 1 });
    turn(r, 'a', 'item_c1', 1);
    r.handleLost(0, 'x');
    fire(r);
    r.handleDialFailed(300, 'refused');
    expect(drain(r)).toMatchObject([{ type: 'give_up', kind: 'exhausted', attempts: 1 }]);
    expect(r.keptTurns).toBe(0);
    r.handleConnected(400);
    r.handleLost(500, 'y');
    r.handleDialFailed(600, 'z');
    r.handleGoingAway(700);
    r.handleIdle(800);
    r.handleTimeout(1e9);
    turn(r, 'b', 'item_c2', 1);
    expect(drain(r)).toEqual([]);
    expect(r.state).toBe('gave_up');
    expect(r.keptTurns).toBe(0);
    expect(r.pollTimeout()).toBeNull();
  });

  it('ignores every input after close, even with a dial pending or a wait scheduled', () => {
    const waiting = connected();
    waiting.handleLost(0, 'x');
    waiting.close();
    expect(drain(waiting)).toEqual([]); // queued actions are dropped too
    expect(waiting.pollTimeout()).toBeNull();
    waiting.handleTimeout(1e9);
    expect(drain(waiting)).toEqual([]);

    const dialing = connected();
    dialing.handleLost(0, 'x');
    drain(dialing);
    fire(dialing);
    dialing.close();
    dialing.handleConnected(300); // the dial completes after close(): not a reconnect
    dialing.handleDialFailed(300, 'late');
    dialing.handleLost(400, 'y');
    turn(dialing, 'a', 'item_c1', 1);
    expect(drain(dialing)).toEqual([]);
    expect(dialing.state).toBe('closed');
    expect(dialing.reconnects).toBe(0);
    expect(dialing.keptTurns).toBe(0);
  });

  it('ignores inputs that do not fit its state', () => {
    const r = new Reconnector<string>();
    r.handleLost(0, 'never connected'); // idle
    r.handleDialFailed(0, 'no dial asked for');
    r.handleTimeout(1e9);
    expect(drain(r)).toEqual([]);
    r.handleConnected(1);
    expect(r.reconnects).toBe(0); // the first connection is not a reconnect
    r.handleDialFailed(2, 'connected');
    r.handleConnected(3);
    expect(r.reconnects).toBe(0);
    r.handleLost(4, 'x');
    drain(r);
    r.handleLost(5, 'lost while reconnecting'); // no connection to lose
    r.handleConnected(6); // no dial asked for yet
    expect(drain(r)).toEqual([]);
    expect(r.state).toBe('waiting');
    expect(r.attempt).toBe(1);
  });
});
