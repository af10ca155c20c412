// Plain-JS audio helpers for the browser test: 16-bit PCM WAV read/write, silence trimming and
// normalized cross-correlation.
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Reads a PCM16 WAV: { rate, channels, samples: Float32Array (first channel, −1…1), pcm:
 * Int16Array (the same samples as stored, for bit-exact comparisons) }.
 */
export function readWav(path) {
  const b = readFileSync(path);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV file`);
  let pos = 12;
  let fmt = null;
  while (pos + 8 <= b.length) {
    const id = b.toString('ascii', pos, pos + 4);
    const size = b.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === 'fmt ') {
      fmt = { format: b.readUInt16LE(body), channels: b.readUInt16LE(body + 2), rate: b.readUInt32LE(body + 4), bits: b.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      if (!fmt) throw new Error(`${path}: data before fmt`);
      if (fmt.bits !== 16 || (fmt.format !== 1 && fmt.format !== 0xfffe)) throw new Error(`${path}: only 16-bit PCM is supported`);
      const end = Math.min(b.length, body + size);
      const frames = Math.floor((end - body) / (2 * fmt.channels));
      const samples = new Float32Array(frames);
      const pcm = new Int16Array(frames);
      for (let i = 0; i < frames; i++) {
        pcm[i] = b.readInt16LE(body + i * 2 * fmt.channels);
        samples[i] = pcm[i] / 32768;
      }
      return { rate: fmt.rate, channels: fmt.channels, samples, pcm };
    }
    pos = body + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

/**
 * Sample-by-sample comparison of two pcm16 signals: { equal, differing (samples that differ over
 * the common length), firstDiff (index, or -1) }. Lengths must match too for `equal`.
 */
export function compareExact(a, b) {
  let differing = 0;
  let firstDiff = -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      differing += 1;
      if (firstDiff < 0) firstDiff = i;
    }
  }
  if (firstDiff < 0 && a.length !== b.length) firstDiff = n;
  return { equal: a.length === b.length && differing === 0, differing, firstDiff };
}

/** Writes mono PCM16. */
export function writeWav(path, samples, rate) {
  const b = Buffer.alloc(44 + samples.length * 2);
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples.length * 2, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples.length * 2, 40);
  for (let i = 0; i < samples.length; i++) b.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768))), 44 + 2 * i);
  writeFileSync(path, b);
}

/**
 * Where the sound is: the first and last 10 ms window whose RMS is within `db` dB of the
 * loudest window. Returns { start, end } in samples (end exclusive).
 */
export function speechBounds(samples, rate, db = -35) {
  const win = Math.round(rate / 100);
  const rms = [];
  for (let i = 0; i + win <= samples.length; i += win) {
    let s = 0;
    for (let j = i; j < i + win; j++) s += samples[j] * samples[j];
    rms.push(Math.sqrt(s / win));
  }
  const peak = Math.max(...rms, 1e-9);
  const floor = peak * 10 ** (db / 20);
  const first = rms.findIndex((r) => r >= floor);
  let last = rms.length - 1;
  while (last > 0 && rms[last] < floor) last--;
  if (first < 0) return { start: 0, end: 0 };
  return { start: first * win, end: (last + 1) * win };
}

function decimate(x, k) {
  const out = new Float32Array(Math.floor(x.length / k));
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let j = 0; j < k; j++) s += x[i * k + j];
    out[i] = s / k;
  }
  return out;
}

/** Normalized correlation of `b` against `a` shifted by `lag` (b[i] ~ a[i + lag]), over the overlap. */
export function ncc(a, b, lag) {
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  const from = Math.max(0, -lag);
  const to = Math.min(b.length, a.length - lag);
  for (let i = from; i < to; i++) {
    const x = a[i + lag];
    const y = b[i];
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : 0;
}

/**
 * The best alignment of `recorded` within `reference` over lags in ±maxLag samples: a coarse
 * search at 1/4 of the rate, refined at full rate. Returns { lag, corr }: recorded[i] ≈
 * reference[i + lag] with normalized correlation `corr` (1 = identical up to gain).
 */
export function bestAlignment(reference, recorded, maxLag) {
  const k = 4;
  const ra = decimate(reference, k);
  const rb = decimate(recorded, k);
  let best = { lag: 0, corr: -2 };
  for (let lag = -Math.ceil(maxLag / k); lag <= Math.ceil(maxLag / k); lag++) {
    const c = ncc(ra, rb, lag);
    if (c > best.corr) best = { lag, corr: c };
  }
  let fine = { lag: best.lag * k, corr: -2 };
  for (let lag = best.lag * k - 2 * k; lag <= best.lag * k + 2 * k; lag++) {
    const c = ncc(reference, recorded, lag);
    if (c > fine.corr) fine = { lag, corr: c };
  }
  return fine;
}

/**
 * Correlation in windows (default 200 ms) over the speech in `recorded`, each window aligned on
 * its own within ±`search` samples of `lag`. A capture glitch (Chromium's audio input inserting
 * or dropping a 10 ms buffer under load) shifts the alignment for the rest of the turn and would
 * halve a single global correlation; here it shows as a `glitch` and the windows around it
 * are left out.
 * Returns the energy-weighted mean correlation, the glitches, and each window's lag.
 */
export function windowedCorrelation(reference, recorded, lag, rate, { winMs = 200, searchMs = 20 } = {}) {
  const win = Math.round((rate * winMs) / 1000);
  const search = Math.round((rate * searchMs) / 1000);
  const { start, end } = speechBounds(recorded, rate);
  const windows = [];
  for (let i = start; i + win <= end; i += win) {
    let best = { lag, corr: -2 };
    for (let l = lag - search; l <= lag + search; l++) {
      let sab = 0;
      let saa = 0;
      let sbb = 0;
      for (let j = 0; j < win; j++) {
        const x = reference[i + j + l] ?? 0;
        const y = recorded[i + j];
        sab += x * y;
        saa += x * x;
        sbb += y * y;
      }
      const c = saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : 0;
      if (c > best.corr) best = { lag: l, corr: c };
    }
    let energy = 0;
    for (let j = 0; j < win; j++) energy += recorded[i + j] ** 2;
    windows.push({ at: i, ...best, energy });
  }
  let num = 0;
  let den = 0;
  let glitches = 0;
  windows.forEach((w, k) => {
    const shifted = k > 0 && Math.abs(w.lag - windows[k - 1].lag) > 2;
    if (shifted) glitches += 1;
    // The window a glitch falls in holds two alignments: it says nothing about the audio.
    const next = windows[k + 1];
    if (shifted || (next && Math.abs(next.lag - w.lag) > 2)) return;
    num += w.corr * w.energy;
    den += w.energy;
  });
  return { corr: den > 0 ? num / den : 0, glitches, lags: windows.map((w) => w.lag) };
}

/**
 * A steady sine tone (Firefox's fake microphone) in `samples` (−1…1): where it starts (`onset`:
 * the first sample above a tenth of the peak), its frequency (zero crossings from `settleMs`
 * after the onset on), its RMS level in dBFS (the quietest and loudest 20 ms window there), and
 * its discontinuities: spans where the signal departs from itself one period earlier by more
 * than `jump` — a dropped or inserted piece of audio shifts the tone's phase there (a piece a
 * whole number of periods long does not, and cannot be seen in a tone).
 */
export function toneAnalysis(samples, rate, freq, { jump = 0.012, settleMs = 20 } = {}) {
  let peak = 0;
  for (const x of samples) peak = Math.max(peak, Math.abs(x));
  const onset = samples.findIndex((x) => Math.abs(x) > peak / 10);
  if (onset < 0) return { onset: -1, hz: 0, minDb: -Infinity, maxDb: -Infinity, discontinuities: [] };
  const from = onset + Math.round((rate * settleMs) / 1000);
  let crossings = 0;
  let first = -1;
  let last = -1;
  for (let i = from + 1; i < samples.length; i++) {
    if (samples[i - 1] < 0 !== samples[i] < 0) {
      crossings += 1;
      if (first < 0) first = i;
      last = i;
    }
  }
  const hz = crossings > 1 ? ((crossings - 1) / 2) * (rate / (last - first)) : 0;
  const win = Math.round(rate / 50);
  let minDb = Infinity;
  let maxDb = -Infinity;
  for (let i = from; i + win <= samples.length; i += win) {
    let e = 0;
    for (let j = i; j < i + win; j++) e += samples[j] * samples[j];
    const db = 10 * Math.log10(e / win + 1e-20);
    minDb = Math.min(minDb, db);
    maxDb = Math.max(maxDb, db);
  }
  // One period, rounded: with a tone of an exact period (1 kHz at 24 kHz: 24 samples) the
  // difference is the tone's slow drift, well under `jump`.
  const period = Math.round(rate / freq);
  const discontinuities = [];
  for (let i = from + period; i < samples.length; i++) {
    if (Math.abs(samples[i] - samples[i - period]) > jump) {
      const prev = discontinuities.at(-1);
      if (prev && i - prev.end <= period) prev.end = i;
      else discontinuities.push({ start: i, end: i });
    }
  }
  return { onset, hz, minDb, maxDb, discontinuities };
}
