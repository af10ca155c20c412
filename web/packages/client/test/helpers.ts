import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function hex(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** A small seeded PRNG (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Vectors {
  events: Array<{ name: string; json: string; hex: string }>;
  stream_headers: Array<{ name: string; kind: 1 | 2; json: string; hex: string }>;
  frames: Array<{ name: string; pts: number; payload_hex: string; hex: string }>;
  varints: Array<{ value: number | string; hex: string; minimal: boolean }>;
  mux: Array<{
    name: string;
    type: 'stream' | 'fin' | 'reset_stream' | 'stop_sending' | 'ping' | 'pong';
    stream_id: number;
    payload_hex?: string;
    code?: number;
    hex: string;
  }>;
  invalid: {
    events: Array<{ name: string; hex: string; error: string }>;
    audio_streams: Array<{ name: string; hex: string; error: string }>;
    mux: Array<{ name: string; hex: string; error: string }>;
  };
}

/** The shared vectors, generated from the Rust implementation (testdata/wire/vectors.json). */
export const VECTORS_PATH = fileURLToPath(new URL('../../../../testdata/wire/vectors.json', import.meta.url));

export function loadVectors(): Vectors {
  return JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as Vectors;
}

/** The wire's error codes (testdata/wire/error-codes.json), shared with the Rust tests. */
export interface ErrorCodes {
  stream_codes: Record<string, number>;
  event_codes: string[];
  error_types: string[];
}

export const ERROR_CODES_PATH = fileURLToPath(new URL('../../../../testdata/wire/error-codes.json', import.meta.url));

export function loadErrorCodes(): ErrorCodes {
  return JSON.parse(readFileSync(ERROR_CODES_PATH, 'utf8')) as ErrorCodes;
}
