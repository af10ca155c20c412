/**
 * The browser's audio for {@link VoqClient}: one AudioContext at 24 kHz, the capture worklet
 * fed by the microphone (with the browser's echo cancellation, noise suppression and AGC), and
 * the playout worklet, played through the echo-cancellation loopback ({@link startLoopback}) or
 * straight to the speakers.
 */

import { MicrophoneError, UnsupportedError } from '../errors.js';
import { FRAME_SAMPLES as FRAME, SAMPLE_RATE } from '../events.js';
import type { PlayoutSnapshot } from '../session.js';
import type { PlayoutState } from '../playout.js';
import { startLoopback } from './aec.js';
import { To24k } from './codecs.js';
import type { Loopback } from './aec.js';
import type { AudioIO, EchoLoopbackState, PlayerIO } from './io.js';
import { WORKLET_SOURCE } from './worklets.gen.js';

export interface BrowserAudioOptions {
  /** Route playback through a local RTCPeerConnection so the echo canceller sees it (default true). */
  echoCancellationLoopback?: boolean;
  /**
   * How the microphone is read: `track-processor` (`MediaStreamTrackProcessor`: the track's own
   * audio frames, from its first sample, no Web Audio clock in between), `worklet` (Web Audio
   * and the capture worklet), or `auto` (default: the first where the browser has it).
   */
  capture?: 'auto' | 'track-processor' | 'worklet';
  /** Extra or overriding microphone constraints. */
  constraints?: MediaTrackConstraints;
}

let workletUrl: string | null = null;
function moduleUrl(): string {
  workletUrl ??= URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: 'text/javascript' }));
  return workletUrl;
}

async function contextWithWorklets(sampleRate?: number): Promise<AudioContext> {
  if (typeof AudioContext !== 'function') throw new UnsupportedError('this browser has no Web Audio');
  let ctx: AudioContext;
  try {
    ctx = new AudioContext(sampleRate ? { sampleRate, latencyHint: 'interactive' } : { latencyHint: 'interactive' });
  } catch {
    ctx = new AudioContext({ latencyHint: 'interactive' });
  }
  if (!ctx.audioWorklet) throw new UnsupportedError('this browser has no AudioWorklet (a secure context — https or localhost — is needed)');
  await ctx.audioWorklet.addModule(moduleUrl());
  // Without a user gesture (and no autoplay permission) this stays pending: don't wait for it.
  if (ctx.state === 'suspended') void ctx.resume().catch(() => {});
  return ctx;
}

function micError(e: unknown): MicrophoneError {
  const name = (e as { name?: string })?.name ?? '';
  const msg = (e as Error)?.message ?? String(e);
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return new MicrophoneError('mic_denied', `microphone access was denied (${msg}): allow the microphone for this page and try again`, { cause: e });
  }
  if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
    return new MicrophoneError('mic_unavailable', `no microphone found (${msg})`, { cause: e });
  }
  return new MicrophoneError('mic_unavailable', `the microphone could not be opened (${name ? `${name}: ` : ''}${msg})`, { cause: e });
}

class WorkletPlayer implements PlayerIO {
  onSnapshot: ((s: PlayoutSnapshot) => void) | null = null;
  private seq = 0;
  private waiting = new Map<number, (r: { responseId: string | null; played: number }) => void>();
  private last: PlayoutSnapshot | null = null;
  onStart: (() => void) | null = null;
  onFlush: (() => void) | null = null;

  constructor(private readonly node: AudioWorkletNode) {
    node.port.onmessage = (e: MessageEvent) => {
      const m = e.data as
        | ({ t: 'snap'; id: string; state: PlayoutState; played: number; buffered: number; underruns: number; stalled: number })
        | { t: 'flushed'; seq: number; id: string | null; played: number };
      if (m.t === 'snap') {
        const snap: PlayoutSnapshot = { responseId: m.id, state: m.state, played: m.played, buffered: m.buffered, underruns: m.underruns, stalled: m.stalled };
        this.last = snap;
        this.onSnapshot?.(snap);
      } else if (m.t === 'flushed') {
        const w = this.waiting.get(m.seq);
        this.waiting.delete(m.seq);
        w?.({ responseId: m.id, played: m.played });
      }
    };
  }

  start(responseId: string, startThresholdMs: number): void {
    this.onStart?.();
    this.node.port.postMessage({ t: 'start', id: responseId, thresholdMs: startThresholdMs });
  }
  push(responseId: string, pts: number, samples: Float32Array): void {
    this.node.port.postMessage({ t: 'push', id: responseId, pts, samples }, [samples.buffer]);
  }
  finish(responseId: string): void {
    this.node.port.postMessage({ t: 'finish', id: responseId });
  }
  flush(responseId?: string): Promise<{ responseId: string | null; played: number }> {
    this.onFlush?.();
    const seq = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      this.node.port.postMessage({ t: 'flush', seq, id: responseId });
      // The audio thread answers within a quantum; if it is stopped, use the last snapshot.
      setTimeout(() => {
        if (!this.waiting.delete(seq)) return;
        resolve({ responseId: this.last?.responseId ?? null, played: this.last?.played ?? 0 });
      }, 250);
    });
  }
}

export class BrowserAudio implements AudioIO {
  private ctx: Promise<AudioContext> | null = null;
  private captureCtx: AudioContext | null = null;
  private stream: MediaStream | null = null;
  private captureNode: AudioWorkletNode | null = null;
  private captureReader: ReadableStreamDefaultReader<AudioData> | null = null;
  private _captureMethod: 'track-processor' | 'worklet' | null = null;
  private _player: WorkletPlayer | null = null;
  private loopback: Loopback | null = null;
  private loopbackState: EchoLoopbackState = 'off';
  private loopbackLatency: number | null = null;
  /** The context playback runs in, once it has started. */
  private outputContext: AudioContext | null = null;
  private measureTimer: ReturnType<typeof setInterval> | null = null;
  private readonly opts: BrowserAudioOptions;

  constructor(opts: BrowserAudioOptions = {}) {
    this.opts = opts;
  }

  /** The shared AudioContext (24 kHz when the browser allows it). */
  context(): Promise<AudioContext> {
    this.ctx ??= contextWithWorklets(SAMPLE_RATE);
    return this.ctx;
  }

  get player(): PlayerIO {
    if (!this._player) throw new UnsupportedError('playback not started');
    return this._player;
  }

  async startCapture(onFrame: (samples: Float32Array) => void): Promise<void> {
    const md = (globalThis.navigator as Navigator | undefined)?.mediaDevices;
    if (!md?.getUserMedia) {
      throw new MicrophoneError('mic_unavailable', 'no microphone API here: the page must be served over https or from localhost');
    }
    const constraints: MediaTrackConstraints = {
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
      channelCount: 1,
      ...this.opts.constraints,
    };
    // The context and its worklets load while the permission prompt is up (playback needs them).
    const ctxReady = this.context();
    const Processor = (globalThis as { MediaStreamTrackProcessor?: new (init: { track: MediaStreamTrack }) => { readable: ReadableStream<AudioData> } })
      .MediaStreamTrackProcessor;
    const method = this.opts.capture ?? 'auto';
    if (method !== 'worklet' && typeof Processor === 'function') {
      const stream = await md.getUserMedia({ audio: constraints }).catch((e: unknown) => {
        throw micError(e);
      });
      this.stream = stream;
      const track = stream.getAudioTracks()[0];
      if (!track) throw new MicrophoneError('mic_unavailable', 'the microphone gave no audio track');
      const reader = new Processor({ track }).readable.getReader();
      this.captureReader = reader;
      this._captureMethod = 'track-processor';
      void this.readTrack(reader, onFrame);
      ctxReady.catch(() => {});
      return;
    }
    if (method === 'track-processor') throw new UnsupportedError('this browser has no MediaStreamTrackProcessor');
    const [stream, ctx] = await Promise.all([
      md.getUserMedia({ audio: constraints }).catch((e: unknown) => {
        throw micError(e);
      }),
      ctxReady,
    ]);
    this.stream = stream;
    let c = ctx;
    let source: MediaStreamAudioSourceNode;
    try {
      source = c.createMediaStreamSource(stream);
    } catch {
      // Firefox cannot connect a microphone to a context of another rate: capture at the
      // device rate and let the worklet resample.
      c = await contextWithWorklets();
      this.captureCtx = c;
      source = c.createMediaStreamSource(stream);
    }
    const node = new AudioWorkletNode(c, 'voq-capture', { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: 'explicit' });
    node.port.onmessage = (e: MessageEvent) => {
      const m = e.data as { t: string; samples: Float32Array };
      if (m.t === 'frame') onFrame(m.samples);
    };
    source.connect(node);
    // The node must reach the destination to be rendered; it outputs nothing audible.
    const mute = c.createGain();
    mute.gain.value = 0;
    node.connect(mute).connect(c.destination);
    this.captureNode = node;
    this._captureMethod = 'worklet';
  }

  /** `track-processor` or `worklet`, once capture has started. */
  captureMethod(): 'track-processor' | 'worklet' | null {
    return this._captureMethod;
  }

  /** Reads the track's audio frames, converts them to 24 kHz and cuts 20 ms frames. */
  private async readTrack(reader: ReadableStreamDefaultReader<AudioData>, onFrame: (samples: Float32Array) => void): Promise<void> {
    let rs: To24k | null = null;
    let frame = new Float32Array(FRAME);
    let fill = 0;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !value) return;
        const raw = new Float32Array(value.numberOfFrames);
        value.copyTo(raw, { planeIndex: 0, format: 'f32-planar' });
        if (!rs || rs.inRate !== value.sampleRate) rs = new To24k(value.sampleRate);
        value.close();
        const x = rs.process(raw);
        for (let i = 0; i < x.length; ) {
          const n = Math.min(FRAME - fill, x.length - i);
          frame.set(x.subarray(i, i + n), fill);
          fill += n;
          i += n;
          if (fill === FRAME) {
            onFrame(frame);
            frame = new Float32Array(FRAME);
            fill = 0;
          }
        }
      }
    } catch {
      // cancelled by stopCapture, or the track ended
    }
  }

  stopCapture(): void {
    this.captureReader?.cancel().catch(() => {});
    this.captureReader = null;
    this.captureNode?.port.postMessage({ t: 'stop' });
    this.captureNode?.disconnect();
    this.captureNode = null;
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    this.stream = null;
  }

  async startPlayback(): Promise<void> {
    if (this._player) return;
    const ctx = await this.context();
    this.outputContext = ctx;
    const node = new AudioWorkletNode(ctx, 'voq-playout', { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    const player = new WorkletPlayer(node);
    this._player = player;
    if (this.opts.echoCancellationLoopback === false || typeof RTCPeerConnection !== 'function') {
      node.connect(ctx.destination);
      this.loopbackState = 'off';
      return;
    }
    this.loopbackState = 'pending';
    const dest = ctx.createMediaStreamDestination();
    node.connect(dest);
    try {
      const lb = await startLoopback(dest.stream);
      this.loopback = lb;
      this.loopbackState = 'active';
      player.onFlush = () => lb.mute(true);
      player.onStart = () => lb.mute(false);
      const measure = () =>
        lb.latencyMs().then(
          (ms) => {
            if (ms !== null) this.loopbackLatency = ms;
          },
          () => {},
        );
      this.measureTimer = setInterval(() => void measure(), 2000);
    } catch {
      node.disconnect();
      node.connect(ctx.destination);
      this.loopbackState = 'failed';
    }
  }

  echoLoopback(): EchoLoopbackState {
    return this.loopbackState;
  }

  loopbackLatencyMs(): number | null {
    return this.loopbackLatency;
  }

  outputLatencyMs(): number | null {
    // Read when asked: it changes with the output device. Chromium reports it (0 with no real
    // device); browsers without it leave it undefined.
    const l = this.outputContext?.outputLatency;
    return typeof l === 'number' && Number.isFinite(l) && l >= 0 ? l * 1000 : null;
  }

  /** `running`, `suspended` (needs a user gesture) or `closed`. */
  async contextState(): Promise<AudioContextState> {
    return (await this.context()).state;
  }

  async close(): Promise<void> {
    this.stopCapture();
    if (this.measureTimer) clearInterval(this.measureTimer);
    this.measureTimer = null;
    this.loopback?.close();
    this.loopback = null;
    await this.captureCtx?.close().catch(() => {});
    if (this.ctx) await (await this.ctx).close().catch(() => {});
  }
}
