/** What {@link VoqClient} needs from the audio side; {@link BrowserAudio} is the real one, the tests pass fakes. */

import type { PlayoutSnapshot } from '../session.js';

export type EchoLoopbackState = 'off' | 'pending' | 'active' | 'failed';

export interface PlayerIO {
  /** Snapshots of the playout (state changes, and periodically while playing). */
  onSnapshot: ((s: PlayoutSnapshot) => void) | null;
  /** A new response: a fresh playout (the previous one, if still playing, is flushed). */
  start(responseId: string, startThresholdMs: number): void;
  /** Decoded samples (24 kHz) placed at `pts`. */
  push(responseId: string, pts: number, samples: Float32Array): void;
  /** No more audio for this response. */
  finish(responseId: string): void;
  /**
   * Silence at once and discard the buffer (of `responseId`, or whatever plays). Resolves with
   * the response and the exact samples played when the output went silent.
   */
  flush(responseId?: string): Promise<{ responseId: string | null; played: number }>;
}

export interface AudioIO {
  /** Opens the microphone; 20 ms frames (480 samples at 24 kHz) then arrive through `onFrame`. */
  startCapture(onFrame: (samples: Float32Array) => void): Promise<void>;
  stopCapture(): void;
  /** The playout; available after {@link AudioIO.startPlayback}. */
  readonly player: PlayerIO;
  /** Sets up the output (worklet, echo-cancellation loopback). */
  startPlayback(): Promise<void>;
  /** State of the echo-cancellation loopback. */
  echoLoopback(): EchoLoopbackState;
  /** Extra output latency of the loopback, when measured (ms). */
  loopbackLatencyMs(): number | null;
  /**
   * How long the output device takes from the audio graph to the speaker
   * (`AudioContext.outputLatency`, ms), where the browser reports it; `null` where it does not.
   */
  outputLatencyMs?(): number | null;
  /** How the microphone is read (`track-processor`, `worklet`), once capture has started. */
  captureMethod?(): string | null;
  close(): Promise<void>;
}
