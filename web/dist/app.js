// packages/client/src/errors.ts
var STREAM_CODES = {
  no_error: 0,
  internal_error: 1,
  protocol_violation: 2,
  frame_too_large: 3,
  bad_stream_header: 4,
  cancelled: 5,
  stream_refused: 6,
  going_away: 7,
  agent_failed: 8,
  version_mismatch: 9,
  unauthorized: 10,
  limit_exceeded: 11
};
var Code = {
  NoError: STREAM_CODES.no_error,
  InternalError: STREAM_CODES.internal_error,
  ProtocolViolation: STREAM_CODES.protocol_violation,
  FrameTooLarge: STREAM_CODES.frame_too_large,
  BadStreamHeader: STREAM_CODES.bad_stream_header,
  Cancelled: STREAM_CODES.cancelled,
  StreamRefused: STREAM_CODES.stream_refused,
  GoingAway: STREAM_CODES.going_away,
  AgentFailed: STREAM_CODES.agent_failed,
  VersionMismatch: STREAM_CODES.version_mismatch,
  Unauthorized: STREAM_CODES.unauthorized,
  LimitExceeded: STREAM_CODES.limit_exceeded
};
var CODE_NAMES = new Map(Object.entries(STREAM_CODES).map(([name, code]) => [code, name]));
function codeName(code) {
  return CODE_NAMES.get(code) ?? `code_${code}`;
}
var ERROR_CODES = [
  "internal_error",
  "protocol_violation",
  "frame_too_large",
  "bad_stream_header",
  "stream_refused",
  "going_away",
  "agent_failed",
  "invalid_json",
  "unknown_event_type",
  "invalid_event",
  "event_too_large",
  "invalid_value",
  "input_audio_buffer_commit_empty",
  "response_not_found",
  "item_not_found",
  "unauthorized",
  "limit_exceeded"
];
var VoqError = class extends Error {
  code;
  constructor(code, message, options) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
};
var MicrophoneError = class extends VoqError {
};
var UnreachableError = class extends VoqError {
  constructor(message, options) {
    super("unreachable", message, options);
  }
};
var CertificateError = class extends VoqError {
  constructor(message, options) {
    super("certificate", message, options);
  }
};
var ProtocolError = class extends VoqError {
  wireCode;
  constructor(message, wireCode = Code.ProtocolViolation) {
    super("protocol", message);
    this.wireCode = wireCode;
  }
};
var UnsupportedError = class extends VoqError {
  constructor(message, options) {
    super("unsupported", message, options);
  }
};
var ClosedError = class extends VoqError {
  wireCode;
  constructor(message, wireCode = null) {
    super("closed", message);
    this.wireCode = wireCode;
  }
};

// packages/client/src/bytes.ts
var ByteQueue = class {
  buf = new Uint8Array(256);
  start = 0;
  end = 0;
  get length() {
    return this.end - this.start;
  }
  push(bytes) {
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buf.length) {
      const len = this.length;
      if (len + bytes.length <= this.buf.length / 2) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        let cap = this.buf.length;
        while (cap < (len + bytes.length) * 2) cap *= 2;
        const next = new Uint8Array(cap);
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      }
      this.start = 0;
      this.end = len;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }
  /** Byte `i` from the front (caller checks `i < length`). */
  at(i) {
    return this.buf[this.start + i] ?? 0;
  }
  u16(i) {
    return this.at(i) << 8 | this.at(i + 1);
  }
  u32(i) {
    return (this.at(i) << 24 | this.at(i + 1) << 16 | this.at(i + 2) << 8 | this.at(i + 3)) >>> 0;
  }
  /** A copy of bytes `[from, to)` counted from the front. */
  slice(from, to) {
    return this.buf.slice(this.start + from, this.start + to);
  }
  /** Drops `n` bytes from the front. */
  consume(n) {
    this.start += Math.min(n, this.length);
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
  }
  clear() {
    this.start = 0;
    this.end = 0;
  }
};
function fromHex(hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
var utf8 = new TextEncoder();
var utf8Strict = new TextDecoder("utf-8", { fatal: true });

// packages/client/src/events.ts
var SAMPLE_RATE = 24e3;
var FRAME_MS = 20;
var FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS / 1e3;
function audioFormat(codec) {
  return { type: codec === "pcm16" ? "audio/pcm" : "audio/opus", rate: 24e3 };
}
function responseItemId(response2) {
  const item = response2.output.find((i) => i.type === "message" && i.role === "assistant");
  return item?.id ?? "";
}
var SERVER_EVENT_TYPES = [
  "session.created",
  "session.updated",
  "input_audio_buffer.speech_started",
  "input_audio_buffer.speech_stopped",
  "input_audio_buffer.committed",
  "input_audio_buffer.cleared",
  "response.created",
  "response.done",
  "response.output_audio_transcript.delta",
  "response.output_audio_transcript.done",
  "conversation.item.truncated",
  "error",
  "voq.session.resumed",
  "voq.pong"
];
var str = (k) => (v) => typeof v[k] === "string" ? null : `"${k}" must be a string`;
var num = (k) => (v) => typeof v[k] === "number" && Number.isInteger(v[k]) && v[k] >= 0 ? null : `"${k}" must be an unsigned integer`;
var obj = (k, inner) => (v) => {
  const o = v[k];
  if (typeof o !== "object" || o === null || Array.isArray(o)) return `"${k}" must be an object`;
  for (const c of inner) {
    const e = c(o);
    if (e) return `${k}.${e}`;
  }
  return null;
};
var u32 = (k) => (v) => num(k)(v) ?? (v[k] <= 4294967295 ? null : `"${k}" must fit in 32 bits`);
var oneOf = (k, values) => (v) => typeof v[k] === "string" && values.includes(v[k]) ? null : `"${k}" must be one of ${values.join(", ")}`;
var optional = (k, check) => (v) => v[k] === void 0 || v[k] === null ? null : check(v);
var oneOf24k = (v) => v.rate === SAMPLE_RATE ? null : `"rate" must be ${SAMPLE_RATE}`;
var format = (k) => obj(k, [oneOf("type", ["audio/pcm", "audio/opus"]), optional("rate", oneOf24k)]);
var session = obj("session", [
  oneOf("type", ["realtime"]),
  str("id"),
  obj("audio", [obj("input", [format("format")]), obj("output", [format("format")])]),
  obj("voq", [str("version"), num("send_ahead_ms"), num("played_report_interval_ms"), str("transport")])
]);
var RESPONSE_STATUSES = ["in_progress", "completed", "cancelled", "failed"];
var assistantItem = (v) => {
  const out = v.output;
  if (!Array.isArray(out)) return '"output" must be an array';
  const item = out.find((i) => typeof i === "object" && i !== null && i.role === "assistant");
  if (!item) return '"output" has no assistant item';
  return typeof item.id === "string" ? null : "output[].id must be a string";
};
var response = obj("response", [
  str("id"),
  oneOf("status", RESPONSE_STATUSES),
  assistantItem,
  optional("voq", obj("voq", [num("audio_ms_generated"), num("audio_ms_sent"), num("bytes_sent"), num("frames_sent")]))
]);
var CHECKS = {
  "session.created": [session],
  "session.updated": [session],
  "input_audio_buffer.speech_started": [str("item_id"), num("audio_start_ms")],
  "input_audio_buffer.speech_stopped": [str("item_id"), num("audio_end_ms")],
  "input_audio_buffer.committed": [
    str("item_id"),
    optional("previous_item_id", str("previous_item_id")),
    obj("voq", [num("frames"), num("audio_ms"), num("bytes")])
  ],
  "input_audio_buffer.cleared": [],
  "response.created": [response],
  "response.done": [response],
  "response.output_audio_transcript.delta": [str("response_id"), str("item_id"), num("output_index"), u32("content_index"), str("delta")],
  "response.output_audio_transcript.done": [str("response_id"), str("item_id"), num("output_index"), u32("content_index"), str("transcript")],
  "conversation.item.truncated": [str("item_id"), u32("content_index"), num("audio_end_ms")],
  error: [obj("error", [str("type"), str("code"), str("message"), optional("event_id", str("event_id"))])],
  "voq.session.resumed": [
    session,
    obj("voq", [(v) => Array.isArray(v.turns) ? null : '"turns" must be an array'])
  ],
  "voq.pong": [num("id")]
};
function parseServerEvent(body) {
  let value;
  try {
    value = JSON.parse(typeof body === "string" ? body : utf8Strict.decode(body));
  } catch (e) {
    return { ok: false, error: { code: "invalid_json", message: `event is not JSON: ${e.message}` } };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, error: { code: "invalid_json", message: "event is not a JSON object" } };
  }
  const v = value;
  if (typeof v.type !== "string") {
    return { ok: false, error: { code: "invalid_json", message: 'event has no string field "type"' } };
  }
  const type = v.type;
  if (!SERVER_EVENT_TYPES.includes(type)) {
    return { ok: false, error: { code: "unknown_event_type", message: `unknown event type "${type}"` } };
  }
  for (const check of CHECKS[type]) {
    const e = check(v);
    if (e) return { ok: false, error: { code: "invalid_event", message: `invalid "${type}" event: ${e}` } };
  }
  return { ok: true, event: v };
}

// packages/client/src/audio/aec.ts
function mungeSdp(sdp) {
  return sdp.replace(/a=fmtp:(\d+) (.*useinbandfec=1.*)/g, (_m, pt, params2) => {
    const p = params2.split(";").filter((x) => !/^(stereo|sprop-stereo|maxaveragebitrate|usedtx)=/.test(x.trim())).concat(["stereo=0", "maxaveragebitrate=128000", "usedtx=0"]);
    return `a=fmtp:${pt} ${p.join(";")}`;
  });
}
async function startLoopback(stream, timeoutMs = 3e3) {
  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  const close = () => {
    pc1.close();
    pc2.close();
  };
  try {
    pc1.onicecandidate = (e) => {
      if (e.candidate) pc2.addIceCandidate(e.candidate).catch(() => {
      });
    };
    pc2.onicecandidate = (e) => {
      if (e.candidate) pc1.addIceCandidate(e.candidate).catch(() => {
      });
    };
    const track = stream.getAudioTracks()[0];
    if (!track) throw new Error("no audio track to loop back");
    pc1.addTrack(track, stream);
    const remote = new Promise((resolve) => {
      pc2.ontrack = (e) => resolve(e.track);
    });
    const offer = await pc1.createOffer();
    const sdp = mungeSdp(offer.sdp ?? "");
    await pc1.setLocalDescription({ type: "offer", sdp });
    await pc2.setRemoteDescription({ type: "offer", sdp });
    const answer = await pc2.createAnswer();
    const asdp = mungeSdp(answer.sdp ?? "");
    await pc2.setLocalDescription({ type: "answer", sdp: asdp });
    await pc1.setRemoteDescription({ type: "answer", sdp: asdp });
    for (const r of pc2.getReceivers()) {
      const rr = r;
      try {
        rr.jitterBufferTarget = 0;
      } catch {
      }
    }
    const connected = new Promise((resolve, reject) => {
      const check = () => {
        if (pc2.connectionState === "connected") resolve();
        else if (pc2.connectionState === "failed" || pc2.connectionState === "closed") reject(new Error(`loopback ${pc2.connectionState}`));
      };
      pc2.onconnectionstatechange = check;
      check();
    });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`loopback did not connect within ${timeoutMs} ms`)), timeoutMs);
    });
    const remoteTrack = await Promise.race([Promise.all([remote, connected]).then(([t]) => t), timeout]).finally(() => clearTimeout(timer));
    const element = new Audio();
    element.autoplay = true;
    element.srcObject = new MediaStream([remoteTrack]);
    await element.play().catch(() => {
    });
    return {
      element,
      mute(on) {
        element.muted = on;
      },
      async latencyMs() {
        const stats = await pc2.getStats();
        let out = null;
        stats.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "audio" && s.jitterBufferEmittedCount) {
            out = Math.round((s.jitterBufferDelay ?? 0) / s.jitterBufferEmittedCount * 1e3 + 20);
          }
        });
        return out;
      },
      close() {
        element.pause();
        element.srcObject = null;
        close();
      }
    };
  } catch (e) {
    close();
    throw e;
  }
}

// packages/client/src/audio/codecs.ts
function floatToPcm16(samples) {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.round((samples[i] ?? 0) * 32768);
    view.setInt16(2 * i, v > 32767 ? 32767 : v < -32768 ? -32768 : v, true);
  }
  return out;
}
function pcm16ToFloat(payload) {
  const n = payload.length >> 1;
  const out = new Float32Array(n);
  const view = new DataView(payload.buffer, payload.byteOffset, n * 2);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}
var Pcm16Encoder = class {
  constructor(onPacket) {
    this.onPacket = onPacket;
  }
  onPacket;
  encode(samples) {
    this.onPacket(floatToPcm16(samples), samples.length);
  }
  flush() {
    return Promise.resolve();
  }
  close() {
  }
};
var Pcm16Decoder = class {
  constructor(onSamples) {
    this.onSamples = onSamples;
  }
  onSamples;
  decode(pts, payload) {
    this.onSamples(pts, pcm16ToFloat(payload));
  }
  flush() {
    return Promise.resolve();
  }
  close() {
  }
};
var OPUS_ENCODER_CONFIG = {
  codec: "opus",
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1,
  bitrate: 32e3,
  // 20 ms frames, raw packets (not Ogg), tuned for speech.
  opus: { frameDuration: 2e4, format: "opus", complexity: 9, application: "voip" }
};
var OPUS_DECODER_CONFIG = {
  codec: "opus",
  sampleRate: SAMPLE_RATE,
  numberOfChannels: 1
};
var usPerSample = 1e6 / SAMPLE_RATE;
var OpusEncoder = class {
  enc;
  samples = 0;
  constructor(onPacket, onError) {
    this.enc = new AudioEncoder({
      output: (chunk) => {
        const payload = new Uint8Array(chunk.byteLength);
        chunk.copyTo(payload);
        const samples = chunk.duration ? Math.round(chunk.duration / usPerSample) : FRAME_SAMPLES;
        onPacket(payload, samples);
      },
      error: (e) => onError(e)
    });
    this.enc.configure(OPUS_ENCODER_CONFIG);
  }
  encode(samples) {
    if (this.enc.state !== "configured") return;
    const data = new AudioData({
      format: "f32-planar",
      sampleRate: SAMPLE_RATE,
      numberOfFrames: samples.length,
      numberOfChannels: 1,
      timestamp: Math.round(this.samples * usPerSample),
      data: samples
    });
    this.samples += samples.length;
    this.enc.encode(data);
    data.close();
  }
  flush() {
    return this.enc.state === "configured" ? this.enc.flush() : Promise.resolve();
  }
  close() {
    if (this.enc.state !== "closed") this.enc.close();
  }
};
var To24k = class _To24k {
  constructor(inRate) {
    this.inRate = inRate;
    this.hist = new Float32Array(_To24k.TAPS.length - 1);
  }
  inRate;
  static TAPS = halfbandTaps(31);
  hist;
  phase = 0;
  pos = 0;
  prev = 0;
  process(x) {
    if (this.inRate === SAMPLE_RATE) return x;
    if (this.inRate === 2 * SAMPLE_RATE) return this.decimate(x);
    return this.linear(x);
  }
  decimate(x) {
    const h = _To24k.TAPS;
    const L = h.length;
    const buf = new Float32Array(L - 1 + x.length);
    buf.set(this.hist);
    buf.set(x, L - 1);
    const out = new Float32Array(Math.floor((x.length + this.phase) / 2));
    let o = 0;
    for (let i = 1 - this.phase; i < x.length && o < out.length; i += 2) {
      let acc = 0;
      for (let k = 0; k < L; k++) acc += (h[k] ?? 0) * (buf[i + L - 1 - k] ?? 0);
      out[o++] = acc;
    }
    this.phase = (this.phase + x.length) % 2;
    this.hist = buf.slice(buf.length - (L - 1));
    return out.subarray(0, o);
  }
  linear(x) {
    const step = this.inRate / SAMPLE_RATE;
    const out = [];
    while (this.pos < x.length - 1) {
      const j = Math.floor(this.pos);
      const f = this.pos - j;
      const a = j < 0 ? this.prev : x[j] ?? 0;
      const b = x[j + 1] ?? 0;
      out.push(a + (b - a) * f);
      this.pos += step;
    }
    this.pos -= x.length;
    this.prev = x[x.length - 1] ?? 0;
    return Float32Array.from(out);
  }
};
function halfbandTaps(n) {
  const h = new Float32Array(n);
  const m = (n - 1) / 2;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const t = i - m;
    const sinc = t === 0 ? 0.5 : Math.sin(Math.PI * 0.5 * t) / (Math.PI * t);
    const w = 0.42 - 0.5 * Math.cos(2 * Math.PI * i / (n - 1)) + 0.08 * Math.cos(4 * Math.PI * i / (n - 1));
    h[i] = sinc * w;
    sum += h[i] ?? 0;
  }
  for (let i = 0; i < n; i++) h[i] = (h[i] ?? 0) / sum;
  return h;
}
var OpusDecoder = class {
  dec;
  resampler = null;
  constructor(onSamples, onError) {
    this.dec = new AudioDecoder({
      output: (data) => {
        const n = data.numberOfFrames;
        const raw = new Float32Array(n);
        data.copyTo(raw, { planeIndex: 0, format: "f32-planar" });
        const pts = Math.round(data.timestamp / usPerSample);
        if (!this.resampler || this.resampler.inRate !== data.sampleRate) this.resampler = new To24k(data.sampleRate);
        data.close();
        onSamples(pts, this.resampler.process(raw));
      },
      error: (e) => onError(e)
    });
    this.dec.configure(OPUS_DECODER_CONFIG);
  }
  decode(pts, payload) {
    if (this.dec.state !== "configured" || payload.length === 0) return;
    this.dec.decode(
      new EncodedAudioChunk({ type: "key", timestamp: Math.round(pts * usPerSample), duration: Math.round(FRAME_SAMPLES * usPerSample), data: payload })
    );
  }
  flush() {
    return this.dec.state === "configured" ? this.dec.flush() : Promise.resolve();
  }
  close() {
    if (this.dec.state !== "closed") this.dec.close();
  }
};
async function opusSupport() {
  const g = globalThis;
  const encode = typeof g.AudioEncoder === "function" && !!await g.AudioEncoder.isConfigSupported(OPUS_ENCODER_CONFIG).then((r) => r.supported, () => false);
  const decode = typeof g.AudioDecoder === "function" && !!await g.AudioDecoder.isConfigSupported(OPUS_DECODER_CONFIG).then((r) => r.supported, () => false);
  return { encode, decode };
}
var browserCodecs = {
  encoder(codec, onPacket, onError) {
    if (codec === "pcm16") return new Pcm16Encoder(onPacket);
    if (typeof AudioEncoder !== "function") throw new UnsupportedError('this browser has no WebCodecs AudioEncoder for Opus (use codec "pcm16")');
    return new OpusEncoder(onPacket, onError);
  },
  decoder(codec, onSamples, onError) {
    if (codec === "pcm16") return new Pcm16Decoder(onSamples);
    if (typeof AudioDecoder !== "function") throw new UnsupportedError('this browser has no WebCodecs AudioDecoder for Opus (use codec "pcm16")');
    return new OpusDecoder(onSamples, onError);
  }
};

// packages/client/src/audio/worklets.gen.ts
var WORKLET_SOURCE = '"use strict";(()=>{var h=class{rate;startThreshold;_state="buffering";ring;head=0;len=0;_played=0;complete=!1;_underruns=0;stalled=0;_discarded=0;_gap=0;_overlap=0;constructor(e,t){this.rate=e,this.startThreshold=Math.floor(e*t/1e3),this.ring=new Float32Array(Math.max(1024,e))}push(e,t){if(this._state==="flushed"||this._state==="finished"){this._discarded+=t.length;return}let s=this._played+this.len,i=0;if(this.len+Math.max(0,e-s)+t.length>288e4){this._discarded+=t.length;return}if(e>s){let r=e-s;if(r>144e4){this._discarded+=t.length;return}this._gap+=r,this.append(null,0,r)}else e<s&&(i=Math.min(s-e,t.length),this._overlap+=i);this.append(t,i,t.length-i)}finish(){this.complete=!0}flush(){let e=this.len;return this._discarded+=e,this.head=0,this.len=0,this._state="flushed",e}render(e){let t={audio:0,underrunStarted:!1};if((this._state==="buffering"||this._state==="stalled")&&(this.len>=Math.max(this.startThreshold,1)||this.complete)&&(this._state="playing"),this._state==="playing"){let s=Math.min(e.length,this.len);this.take(e,s),this._played+=s,t.audio=s,this.len===0&&(this.complete?this._state="finished":s<e.length&&(this._state="stalled",this._underruns+=1,t.underrunStarted=!0))}return e.fill(0,t.audio),this._state==="stalled"&&(this.stalled+=e.length-t.audio),t}get state(){return this._state}get played(){return this._played}get playedMs(){return Math.floor(this._played*1e3/this.rate)}get buffered(){return this.len}get bufferedMs(){return Math.floor(this.len*1e3/this.rate)}get underruns(){return this._underruns}get stalledSamples(){return this.stalled}get stallMs(){return Math.floor(this.stalled*1e3/this.rate)}get discarded(){return this._discarded}get gapSamples(){return this._gap}get overlapSamples(){return this._overlap}append(e,t,s){if(s<=0)return;if(this.len+s>this.ring.length){let a=this.ring.length;for(;a<this.len+s;)a*=2;let n=new Float32Array(a);this.take(n,this.len,!1),this.ring=n,this.head=0}let i=this.ring.length,r=(this.head+this.len)%i;for(let a=0;a<s;a++)this.ring[r]=e?e[t+a]??0:0,r=r+1===i?0:r+1;this.len+=s}take(e,t,s=!0){let i=this.ring.length,r=Math.min(t,i-this.head);e.set(this.ring.subarray(this.head,this.head+r),0),t>r&&e.set(this.ring.subarray(0,t-r),r),s&&(this.head=(this.head+t)%i,this.len-=t,this.len===0&&(this.head=0))}};var p=24e3,o=480,d=class extends AudioWorkletProcessor{frame=new Float32Array(o);fill=0;step=sampleRate/p;pos=0;prev=0;active=!0;constructor(){super(),this.port.onmessage=e=>{e.data?.t==="stop"&&(this.active=!1)}}process(e){let t=e[0]?.[0];if(!t||t.length===0)return this.active;if(this.step===1)for(let s=0;s<t.length;s++)this.put(t[s]??0);else{let s=t.length;for(;this.pos<s-1;){let i=Math.floor(this.pos),r=this.pos-i,a=i<0?this.prev:t[i]??0,n=t[i+1]??0;this.put(a+(n-a)*r),this.pos+=this.step}this.pos-=s,this.prev=t[s-1]??0}return this.active}put(e){if(this.frame[this.fill++]=e,this.fill===o){let t=this.frame;this.port.postMessage({t:"frame",samples:t},[t.buffer]),this.frame=new Float32Array(o),this.fill=0}}},y=8,u=class extends AudioWorkletProcessor{cur=null;tick=0;step=p/sampleRate;src=new Float32Array(512);srcLen=0;pos=0;constructor(){super(),this.port.onmessage=e=>this.onMessage(e.data)}onMessage(e){let t=this.cur;switch(e.t){case"start":t&&t.p.state!=="finished"&&t.p.state!=="flushed"&&(t.p.flush(),this.snapshot()),this.cur={id:e.id,p:new h(p,e.thresholdMs),last:"buffering"},this.srcLen=0,this.pos=0,this.snapshot();break;case"push":t?.id===e.id&&t.p.push(e.pts,e.samples);break;case"finish":t?.id===e.id&&t.p.finish();break;case"flush":{t&&(e.id===void 0||e.id===t.id)&&(t.p.state!=="finished"&&t.p.state!=="flushed"&&t.p.flush(),this.srcLen=0,this.pos=0,t.last=t.p.state);let s=this.cur;this.port.postMessage({t:"flushed",seq:e.seq,id:s?.id??null,played:s?.p.played??0,state:s?.p.state??null});break}}}snapshot(){let e=this.cur;if(!e)return;let t=e.p;e.last=t.state,this.port.postMessage({t:"snap",id:e.id,state:t.state,played:t.played,buffered:t.buffered,underruns:t.underruns,stalled:t.stalledSamples})}process(e,t){let s=t[0],i=s?.[0];if(!s||!i)return!0;let r=this.cur;r?this.step===1?r.p.render(i):this.resampled(r.p,i):i.fill(0);for(let a=1;a<s.length;a++)s[a]?.set(i);if(r){let a=r.p.state!=="finished"&&r.p.state!=="flushed";this.tick+=1,(r.p.state!==r.last||a&&this.tick%y===0)&&this.snapshot()}return!0}resampled(e,t){let s=t.length,i=Math.floor(this.pos+(s-1)*this.step)+2;if(i>this.src.length){let a=new Float32Array(i*2);a.set(this.src.subarray(0,this.srcLen)),this.src=a}i>this.srcLen&&(e.render(this.src.subarray(this.srcLen,i)),this.srcLen=i);for(let a=0;a<s;a++){let n=this.pos+a*this.step,l=Math.floor(n),g=n-l,f=this.src[l]??0,v=this.src[l+1]??0;t[a]=f+(v-f)*g}this.pos+=s*this.step;let r=Math.min(Math.floor(this.pos),this.srcLen);this.src.copyWithin(0,r,this.srcLen),this.srcLen-=r,this.pos-=r}};registerProcessor("voq-capture",d);registerProcessor("voq-playout",u);})();';

// packages/client/src/audio/browser.ts
var workletUrl = null;
function moduleUrl() {
  workletUrl ??= URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
  return workletUrl;
}
async function contextWithWorklets(sampleRate) {
  if (typeof AudioContext !== "function") throw new UnsupportedError("this browser has no Web Audio");
  let ctx;
  try {
    ctx = new AudioContext(sampleRate ? { sampleRate, latencyHint: "interactive" } : { latencyHint: "interactive" });
  } catch {
    ctx = new AudioContext({ latencyHint: "interactive" });
  }
  if (!ctx.audioWorklet) throw new UnsupportedError("this browser has no AudioWorklet (a secure context — https or localhost — is needed)");
  await ctx.audioWorklet.addModule(moduleUrl());
  if (ctx.state === "suspended") void ctx.resume().catch(() => {
  });
  return ctx;
}
function micError(e) {
  const name = e?.name ?? "";
  const msg = e?.message ?? String(e);
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new MicrophoneError("mic_denied", `microphone access was denied (${msg}): allow the microphone for this page and try again`, { cause: e });
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new MicrophoneError("mic_unavailable", `no microphone found (${msg})`, { cause: e });
  }
  return new MicrophoneError("mic_unavailable", `the microphone could not be opened (${name ? `${name}: ` : ""}${msg})`, { cause: e });
}
var WorkletPlayer = class {
  constructor(node) {
    this.node = node;
    node.port.onmessage = (e) => {
      const m = e.data;
      if (m.t === "snap") {
        const snap = { responseId: m.id, state: m.state, played: m.played, buffered: m.buffered, underruns: m.underruns, stalled: m.stalled };
        this.last = snap;
        this.onSnapshot?.(snap);
      } else if (m.t === "flushed") {
        const w = this.waiting.get(m.seq);
        this.waiting.delete(m.seq);
        w?.({ responseId: m.id, played: m.played });
      }
    };
  }
  node;
  onSnapshot = null;
  seq = 0;
  waiting = /* @__PURE__ */ new Map();
  last = null;
  onStart = null;
  onFlush = null;
  start(responseId, startThresholdMs) {
    this.onStart?.();
    this.node.port.postMessage({ t: "start", id: responseId, thresholdMs: startThresholdMs });
  }
  push(responseId, pts, samples) {
    this.node.port.postMessage({ t: "push", id: responseId, pts, samples }, [samples.buffer]);
  }
  finish(responseId) {
    this.node.port.postMessage({ t: "finish", id: responseId });
  }
  flush(responseId) {
    this.onFlush?.();
    const seq = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      this.node.port.postMessage({ t: "flush", seq, id: responseId });
      setTimeout(() => {
        if (!this.waiting.delete(seq)) return;
        resolve({ responseId: this.last?.responseId ?? null, played: this.last?.played ?? 0 });
      }, 250);
    });
  }
};
var BrowserAudio = class {
  ctx = null;
  captureCtx = null;
  stream = null;
  captureNode = null;
  captureReader = null;
  _captureMethod = null;
  _player = null;
  loopback = null;
  loopbackState = "off";
  loopbackLatency = null;
  /** The context playback runs in, once it has started. */
  outputContext = null;
  measureTimer = null;
  opts;
  constructor(opts = {}) {
    this.opts = opts;
  }
  /** The shared AudioContext (24 kHz when the browser allows it). */
  context() {
    this.ctx ??= contextWithWorklets(SAMPLE_RATE);
    return this.ctx;
  }
  get player() {
    if (!this._player) throw new UnsupportedError("playback not started");
    return this._player;
  }
  async startCapture(onFrame) {
    const md = globalThis.navigator?.mediaDevices;
    if (!md?.getUserMedia) {
      throw new MicrophoneError("mic_unavailable", "no microphone API here: the page must be served over https or from localhost");
    }
    const constraints = {
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
      channelCount: 1,
      ...this.opts.constraints
    };
    const ctxReady = this.context();
    const Processor = globalThis.MediaStreamTrackProcessor;
    const method = this.opts.capture ?? "auto";
    if (method !== "worklet" && typeof Processor === "function") {
      const stream2 = await md.getUserMedia({ audio: constraints }).catch((e) => {
        throw micError(e);
      });
      this.stream = stream2;
      const track = stream2.getAudioTracks()[0];
      if (!track) throw new MicrophoneError("mic_unavailable", "the microphone gave no audio track");
      const reader = new Processor({ track }).readable.getReader();
      this.captureReader = reader;
      this._captureMethod = "track-processor";
      void this.readTrack(reader, onFrame);
      ctxReady.catch(() => {
      });
      return;
    }
    if (method === "track-processor") throw new UnsupportedError("this browser has no MediaStreamTrackProcessor");
    const [stream, ctx] = await Promise.all([
      md.getUserMedia({ audio: constraints }).catch((e) => {
        throw micError(e);
      }),
      ctxReady
    ]);
    this.stream = stream;
    let c = ctx;
    let source;
    try {
      source = c.createMediaStreamSource(stream);
    } catch {
      c = await contextWithWorklets();
      this.captureCtx = c;
      source = c.createMediaStreamSource(stream);
    }
    const node = new AudioWorkletNode(c, "voq-capture", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit" });
    node.port.onmessage = (e) => {
      const m = e.data;
      if (m.t === "frame") onFrame(m.samples);
    };
    source.connect(node);
    const mute = c.createGain();
    mute.gain.value = 0;
    node.connect(mute).connect(c.destination);
    this.captureNode = node;
    this._captureMethod = "worklet";
  }
  /** `track-processor` or `worklet`, once capture has started. */
  captureMethod() {
    return this._captureMethod;
  }
  /** Reads the track's audio frames, converts them to 24 kHz and cuts 20 ms frames. */
  async readTrack(reader, onFrame) {
    let rs = null;
    let frame = new Float32Array(FRAME_SAMPLES);
    let fill = 0;
    try {
      for (; ; ) {
        const { value, done: done2 } = await reader.read();
        if (done2 || !value) return;
        const raw = new Float32Array(value.numberOfFrames);
        value.copyTo(raw, { planeIndex: 0, format: "f32-planar" });
        if (!rs || rs.inRate !== value.sampleRate) rs = new To24k(value.sampleRate);
        value.close();
        const x = rs.process(raw);
        for (let i = 0; i < x.length; ) {
          const n = Math.min(FRAME_SAMPLES - fill, x.length - i);
          frame.set(x.subarray(i, i + n), fill);
          fill += n;
          i += n;
          if (fill === FRAME_SAMPLES) {
            onFrame(frame);
            frame = new Float32Array(FRAME_SAMPLES);
            fill = 0;
          }
        }
      }
    } catch {
    }
  }
  stopCapture() {
    this.captureReader?.cancel().catch(() => {
    });
    this.captureReader = null;
    this.captureNode?.port.postMessage({ t: "stop" });
    this.captureNode?.disconnect();
    this.captureNode = null;
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    this.stream = null;
  }
  async startPlayback() {
    if (this._player) return;
    const ctx = await this.context();
    this.outputContext = ctx;
    const node = new AudioWorkletNode(ctx, "voq-playout", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1] });
    const player = new WorkletPlayer(node);
    this._player = player;
    if (this.opts.echoCancellationLoopback === false || typeof RTCPeerConnection !== "function") {
      node.connect(ctx.destination);
      this.loopbackState = "off";
      return;
    }
    this.loopbackState = "pending";
    const dest = ctx.createMediaStreamDestination();
    node.connect(dest);
    try {
      const lb = await startLoopback(dest.stream);
      this.loopback = lb;
      this.loopbackState = "active";
      player.onFlush = () => lb.mute(true);
      player.onStart = () => lb.mute(false);
      const measure = () => lb.latencyMs().then(
        (ms2) => {
          if (ms2 !== null) this.loopbackLatency = ms2;
        },
        () => {
        }
      );
      this.measureTimer = setInterval(() => void measure(), 2e3);
    } catch {
      node.disconnect();
      node.connect(ctx.destination);
      this.loopbackState = "failed";
    }
  }
  echoLoopback() {
    return this.loopbackState;
  }
  loopbackLatencyMs() {
    return this.loopbackLatency;
  }
  outputLatencyMs() {
    const l = this.outputContext?.outputLatency;
    return typeof l === "number" && Number.isFinite(l) && l >= 0 ? l * 1e3 : null;
  }
  /** `running`, `suspended` (needs a user gesture) or `closed`. */
  async contextState() {
    return (await this.context()).state;
  }
  async close() {
    this.stopCapture();
    if (this.measureTimer) clearInterval(this.measureTimer);
    this.measureTimer = null;
    this.loopback?.close();
    this.loopback = null;
    await this.captureCtx?.close().catch(() => {
    });
    if (this.ctx) await (await this.ctx).close().catch(() => {
    });
  }
};

// packages/client/src/varint.ts
var VARINT_MAX = (1n << 62n) - 1n;
function varintLength(v) {
  const x = BigInt(v);
  if (x < 0n || x > VARINT_MAX) throw new RangeError(`varint out of range: ${x}`);
  if (x < 1n << 6n) return 1;
  if (x < 1n << 14n) return 2;
  if (x < 1n << 30n) return 4;
  return 8;
}
function encodeVarint(v) {
  const x = BigInt(v);
  const len = varintLength(x);
  const out = new Uint8Array(len);
  writeVarint(x, len, out, 0);
  return out;
}
function writeVarint(v, len, out, offset) {
  const prefix = BigInt({ 1: 0, 2: 1, 4: 2, 8: 3 }[len] ?? 0) << BigInt(len * 8 - 2);
  let x = v | prefix;
  for (let i = len - 1; i >= 0; i--) {
    out[offset + i] = Number(x & 0xffn);
    x >>= 8n;
  }
}
function decodeVarint(buf, offset = 0) {
  if (offset >= buf.length) return null;
  const first = buf[offset] ?? 0;
  const length = 1 << (first >> 6);
  if (offset + length > buf.length) return null;
  if (length <= 4) {
    let v2 = first & 63;
    for (let i = 1; i < length; i++) v2 = v2 * 256 + (buf[offset + i] ?? 0);
    return { value: BigInt(v2), length };
  }
  let v = BigInt(first & 63);
  for (let i = 1; i < length; i++) v = v << 8n | BigInt(buf[offset + i] ?? 0);
  return { value: v, length };
}

// packages/client/src/mux.ts
var MuxType = {
  Stream: 0,
  Fin: 1,
  ResetStream: 2,
  StopSending: 3,
  Ping: 16,
  Pong: 17
};
function muxErrorMessage(e) {
  switch (e.kind) {
    case "Empty":
      return "empty message";
    case "UnknownType":
      return `unknown mux frame type 0x${e.type.toString(16).padStart(2, "0")}`;
    case "TruncatedVarint":
      return "message ends inside a varint";
    case "BadPing":
      return "PING/PONG must carry exactly 8 bytes after stream id 0";
    case "TrailingBytes":
      return `${e.count} bytes after the end of the frame`;
    case "VarintTooLarge":
      return "stream id or code over 2^53";
  }
}
function streamKind(id) {
  return { serverInitiated: (id & 1) === 1, unidirectional: (id & 2) === 2 };
}
function nthStreamId(n, kind) {
  return n * 4 + (kind.unidirectional ? 2 : 0) + (kind.serverInitiated ? 1 : 0);
}
function encodeMux(frame) {
  switch (frame.type) {
    case "stream": {
      const idLen = varintLength(frame.id);
      const out = new Uint8Array(1 + idLen + frame.data.length);
      out[0] = MuxType.Stream;
      writeVarint(BigInt(frame.id), idLen, out, 1);
      out.set(frame.data, 1 + idLen);
      return out;
    }
    case "fin":
      return join(MuxType.Fin, encodeVarint(frame.id));
    case "reset_stream":
      return join(MuxType.ResetStream, encodeVarint(frame.id), encodeVarint(frame.code));
    case "stop_sending":
      return join(MuxType.StopSending, encodeVarint(frame.id), encodeVarint(frame.code));
    case "ping":
    case "pong": {
      if (frame.data.length !== 8) throw new RangeError("PING/PONG carry exactly 8 bytes");
      const out = new Uint8Array(10);
      out[0] = frame.type === "ping" ? MuxType.Ping : MuxType.Pong;
      out[1] = 0;
      out.set(frame.data, 2);
      return out;
    }
  }
}
function join(type, ...parts) {
  let n = 1;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  out[0] = type;
  let o = 1;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
function decodeMux(msg) {
  if (msg.length === 0) return { ok: false, error: { kind: "Empty" } };
  const type = msg[0] ?? 0;
  const known = Object.values(MuxType);
  if (!known.includes(type)) return { ok: false, error: { kind: "UnknownType", type } };
  const id = decodeVarint(msg, 1);
  if (!id) return { ok: false, error: { kind: "TruncatedVarint" } };
  let pos = 1 + id.length;
  const rest = msg.length - pos;
  if (id.value > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: { kind: "VarintTooLarge" } };
  const sid = Number(id.value);
  const withCode = () => {
    const code = decodeVarint(msg, pos);
    if (!code) return { ok: false, error: { kind: "TruncatedVarint" } };
    const extra = msg.length - pos - code.length;
    if (extra > 0) return { ok: false, error: { kind: "TrailingBytes", count: extra } };
    if (code.value > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, error: { kind: "VarintTooLarge" } };
    return { ok: true, code: Number(code.value) };
  };
  switch (type) {
    case MuxType.Stream:
      return { ok: true, frame: { type: "stream", id: sid, data: msg.slice(pos) } };
    case MuxType.Fin:
      if (rest > 0) return { ok: false, error: { kind: "TrailingBytes", count: rest } };
      return { ok: true, frame: { type: "fin", id: sid } };
    case MuxType.ResetStream:
    case MuxType.StopSending: {
      const c = withCode();
      if (!c.ok) return c;
      return {
        ok: true,
        frame: { type: type === MuxType.ResetStream ? "reset_stream" : "stop_sending", id: sid, code: c.code }
      };
    }
    default: {
      if (rest !== 8 || sid !== 0) return { ok: false, error: { kind: "BadPing" } };
      const data = msg.slice(pos, pos + 8);
      pos += 8;
      return { ok: true, frame: { type: type === MuxType.Ping ? "ping" : "pong", data } };
    }
  }
}

// packages/client/src/muxconn.ts
var DEFAULT_MUX_CONFIG = Object.freeze({
  pingIntervalMs: 1e3,
  idleTimeoutMs: 3e4,
  maxPeerUniStreams: 16,
  maxFrameData: 64 * 1024
});
var OK = { ok: true, value: void 0 };
var MuxConnection = class {
  /** A connection that starts at `now` (ms); its first output is a PING. */
  constructor(side, config, now) {
    this.side = side;
    this.config = { ...DEFAULT_MUX_CONFIG, ...config };
    this.epoch = now;
    this.nextPing = now;
    this.lastReceived = now;
    this.handleTimeout(now);
  }
  side;
  config;
  /** Time zero of the PING payloads (microseconds since it). */
  epoch;
  /** Our next stream index per kind: `[bidirectional, unidirectional]`. */
  next = [0, 0];
  /** The peer's next expected stream index per kind; lower ones are old. */
  peerNext = [0, 0];
  /** Streams this side reads, until they end, are stopped or released. */
  reading = /* @__PURE__ */ new Set();
  /** Streams this side writes, until released. */
  writing = /* @__PURE__ */ new Map();
  out = [];
  outHead = 0;
  _rtt = null;
  nextPing;
  lastReceived;
  closed = null;
  /** The smoothed round-trip time in ms from PING/PONG (RFC 9002's 7/8 smoothing), once measured. */
  rtt() {
    return this._rtt;
  }
  /**
   * Whether the connection is closed (locally, by a violation, by the idle timeout, or by the
   * peer). A closed connection ignores every input and command.
   */
  get isClosed() {
    return this.closed !== null;
  }
  /** Why the connection closed, once it has. */
  closeReason() {
    return this.closed;
  }
  /** The next output, if any. Drain after every input and command. */
  pollOutput() {
    if (this.outHead >= this.out.length) return null;
    const o = this.out[this.outHead++] ?? null;
    if (this.outHead === this.out.length) {
      this.out.length = 0;
      this.outHead = 0;
    }
    return o;
  }
  /**
   * When (ms) {@link handleTimeout} must next be called: the next PING or the idle deadline.
   * `null` once closed.
   */
  pollTimeout() {
    if (this.closed !== null) return null;
    return Math.min(this.nextPing, this.lastReceived + this.config.idleTimeoutMs);
  }
  /** Time has reached `now`: PING when due, close when the peer has been silent too long. */
  handleTimeout(now) {
    if (this.closed !== null) return;
    if (now >= this.lastReceived + this.config.idleTimeoutMs) {
      const why = `nothing received for ${this.config.idleTimeoutMs} ms`;
      this.close(Code.NoError, why);
      return;
    }
    if (now >= this.nextPing) {
      const micros = Math.max(0, Math.floor((now - this.epoch) * 1e3));
      this.send({ type: "ping", data: u64be(micros) });
      this.nextPing = now + this.config.pingIntervalMs;
    }
  }
  /**
   * The peer sent a binary message. A malformed one or a breach of the mux rules closes the
   * connection (`protocol_violation`).
   */
  handleMessage(now, message) {
    if (this.closed !== null) return;
    this.lastReceived = now;
    const r = decodeMux(message);
    if (!r.ok) {
      this.violation(badFrame(r.error));
      return;
    }
    const frame = r.frame;
    switch (frame.type) {
      case "ping":
        this.send({ type: "pong", data: frame.data });
        return;
      case "pong":
        this.pong(now, frame.data);
        return;
      case "stop_sending": {
        const state = this.writing.get(frame.id);
        if (state && (state.kind === "open" || state.kind === "done")) {
          this.writing.set(frame.id, { kind: "stopped", code: frame.code });
          this.out.push({ type: "stopped", id: frame.id, code: frame.code });
        }
        return;
      }
      case "stream":
        this.deliver(frame.id, { kind: "data", data: frame.data });
        return;
      case "fin":
        this.deliver(frame.id, { kind: "fin" });
        return;
      case "reset_stream":
        this.deliver(frame.id, { kind: "reset", code: frame.code });
        return;
    }
  }
  /** The peer sent a text message: the mux is binary only. */
  handleText() {
    this.violation("text message on a voq mux");
  }
  /**
   * The WebSocket closed underneath (the peer's close frame, an error, EOF). Nothing more is
   * sent; the shell reports `reason` to the streams.
   */
  handlePeerClosed(reason) {
    if (this.closed === null) {
      this.closed = reason;
      this.reading.clear();
      this.writing.clear();
    }
  }
  /** Opens a stream of ours: bidirectional (the client's control stream) or unidirectional. */
  open(bidirectional) {
    if (this.closed !== null) return { ok: false, error: { kind: "closed", reason: this.closed } };
    const kind = { serverInitiated: this.side === "server", unidirectional: !bidirectional };
    const slot = bidirectional ? 0 : 1;
    const id = nthStreamId(this.next[slot], kind);
    this.next[slot] += 1;
    this.writing.set(id, { kind: "open" });
    if (bidirectional) this.reading.add(id);
    return { ok: true, value: id };
  }
  /**
   * Writes bytes on a stream this side writes, cut into frames of at most
   * {@link MuxConfig.maxFrameData} bytes.
   */
  write(id, data) {
    const w = this.writable(id);
    if (!w.ok) return w;
    const size = Math.max(1, this.config.maxFrameData);
    for (let at = 0; at < data.length; at += size) {
      this.send({ type: "stream", id, data: data.subarray(at, at + size) });
    }
    return OK;
  }
  /** Ends a stream cleanly (FIN) after what was written. */
  finish(id) {
    const w = this.writable(id);
    if (!w.ok) return w;
    this.writing.set(id, { kind: "done" });
    this.send({ type: "fin", id });
    return OK;
  }
  /**
   * Abandons a stream this side writes (RESET_STREAM with `code`). Also after the peer stopped
   * it, as QUIC answers STOP_SENDING.
   */
  reset(id, code) {
    if (this.closed !== null) return;
    const state = this.writing.get(id);
    if (state && state.kind !== "done") {
      this.writing.set(id, { kind: "done" });
      this.send({ type: "reset_stream", id, code });
    }
  }
  /**
   * Asks the peer to stop sending a stream this side reads (STOP_SENDING with `code`); its later
   * frames are ignored.
   */
  stop(id, code) {
    if (this.closed === null && this.reading.delete(id)) {
      this.send({ type: "stop_sending", id, code });
    }
  }
  /**
   * The application no longer writes this stream (its handle is gone): a later STOP_SENDING has
   * nobody to tell and is ignored.
   */
  releaseSend(id) {
    this.writing.delete(id);
  }
  /**
   * The application no longer reads this stream (its handle is gone, without {@link stop}):
   * later frames are dropped.
   */
  releaseRecv(id) {
    this.reading.delete(id);
  }
  /** Closes the connection with `code`; emits a `close` output once. */
  close(code, reason) {
    if (this.closed !== null) return;
    this.closed = `closed locally: ${codeName(code)} ${reason}`;
    this.reading.clear();
    this.writing.clear();
    this.out.push({ type: "close", code, reason });
  }
  violation(why) {
    if (this.closed !== null) return;
    this.close(Code.ProtocolViolation, why);
    this.closed = `protocol violation: ${why}`;
  }
  writable(id) {
    if (this.closed !== null) return { ok: false, error: { kind: "closed", reason: this.closed } };
    const state = this.writing.get(id);
    if (state?.kind === "open") return OK;
    if (state?.kind === "stopped") return { ok: false, error: { kind: "stopped", code: state.code } };
    return { ok: false, error: { kind: "not_writable" } };
  }
  send(frame) {
    this.out.push({ type: "transmit", bytes: encodeMux(frame) });
  }
  pong(now, payload) {
    const sentUs = readU64be(payload);
    const elapsedUs = Math.max(0, (now - this.epoch) * 1e3);
    if (sentUs > elapsedUs) return;
    const sample = (elapsedUs - sentUs) / 1e3;
    this._rtt = this._rtt === null ? sample : (this._rtt * 7 + sample) / 8;
  }
  /** A stream frame from the peer: to a stream this side reads, or the peer's next new one. */
  deliver(id, what) {
    if (this.reading.has(id)) {
      this.emit(id, what);
      return;
    }
    const kind = streamKind(id);
    const ours = kind.serverInitiated === (this.side === "server");
    if (ours) {
      if (kind.unidirectional) this.violation("data on a unidirectional stream of the receiver");
      return;
    }
    const slot = kind.unidirectional ? 1 : 0;
    const index = Math.floor(id / 4);
    if (index < this.peerNext[slot]) return;
    if (index !== this.peerNext[slot]) {
      this.violation("stream ids of one kind must be used in order");
      return;
    }
    this.peerNext[slot] += 1;
    const controlStream = this.side === "server" && !kind.unidirectional && index === 0;
    if (!kind.unidirectional && !controlStream) {
      this.send({ type: "stop_sending", id, code: Code.StreamRefused });
      this.send({ type: "reset_stream", id, code: Code.StreamRefused });
      return;
    }
    if (kind.unidirectional && this.openPeerUni() >= this.config.maxPeerUniStreams) {
      this.send({ type: "stop_sending", id, code: Code.StreamRefused });
      return;
    }
    this.reading.add(id);
    if (controlStream) this.writing.set(id, { kind: "open" });
    this.out.push({ type: "opened", id });
    this.emit(id, what);
  }
  openPeerUni() {
    const ours = this.side === "server";
    let n = 0;
    for (const id of this.reading) {
      const k = streamKind(id);
      if (k.unidirectional && k.serverInitiated !== ours) n++;
    }
    return n;
  }
  emit(id, what) {
    switch (what.kind) {
      case "data":
        this.out.push({ type: "data", id, data: what.data });
        return;
      case "fin":
        this.reading.delete(id);
        this.out.push({ type: "fin", id });
        return;
      case "reset":
        this.reading.delete(id);
        this.out.push({ type: "reset", id, code: what.code });
        return;
    }
  }
};
function u64be(n) {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(n / 2 ** 32));
  view.setUint32(4, n % 2 ** 32);
  return out;
}
function readU64be(b) {
  const view = new DataView(b.buffer, b.byteOffset, 8);
  return view.getUint32(0) * 2 ** 32 + view.getUint32(4);
}
function badFrame(e) {
  return `bad mux frame: ${muxErrorMessage(e)}`;
}

// packages/client/src/websocket.ts
var CLOSE_CODE_BASE = 4e3;
var PING_INTERVAL_MS = DEFAULT_MUX_CONFIG.pingIntervalMs;
var MuxRecv = class {
  constructor(id, t) {
    this.id = id;
    this.t = t;
  }
  id;
  t;
  onData = null;
  onFin = null;
  onReset = null;
  stop(code) {
    this.t.stopStream(this.id, code);
  }
};
var MuxSend = class {
  constructor(id, t) {
    this.id = id;
    this.t = t;
  }
  id;
  t;
  onStop = null;
  write(bytes) {
    this.t.command((c) => void c.write(this.id, bytes));
  }
  finish() {
    this.t.command((c) => void c.finish(this.id));
  }
  reset(code) {
    this.t.command((c) => c.reset(this.id, code));
  }
};
var WebSocketTransport = class {
  /** Wraps an open WebSocket. Use {@link connectWebSocket} to dial. */
  constructor(ws, opts = {}) {
    this.ws = ws;
    this.now = opts.now ?? (() => performance.now());
    this.setTimer = opts.setTimeout ?? ((fn, ms2) => setTimeout(fn, ms2));
    this.clearTimer = opts.clearTimeout ?? ((h) => clearTimeout(h));
    this.closed = new Promise((r) => this.resolveClosed = r);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => {
      const code = ev.code >= CLOSE_CODE_BASE && ev.code < CLOSE_CODE_BASE + 1e3 ? ev.code - CLOSE_CODE_BASE : null;
      const reason = ev.reason || `WebSocket closed (${ev.code})`;
      this.conn.handlePeerClosed(reason);
      this.finishClose({ code, reason, local: this.closingLocally });
    };
    ws.onerror = () => {
    };
    this.conn = new MuxConnection("client", opts.mux ?? {}, this.now());
    this.drain();
  }
  ws;
  name = "websocket";
  onIncomingUni = null;
  closed;
  resolveClosed;
  isClosed = false;
  closingLocally = false;
  conn;
  readers = /* @__PURE__ */ new Map();
  writers = /* @__PURE__ */ new Map();
  draining = false;
  /** The pending timer and the deadline it was set for. */
  timer = null;
  timerAt = null;
  now;
  setTimer;
  clearTimer;
  openBidi() {
    const id = this.openId(true);
    const send = new MuxSend(id, this);
    const recv = new MuxRecv(id, this);
    if (!this.isClosed) {
      this.writers.set(id, send);
      this.readers.set(id, recv);
    }
    return { send, recv };
  }
  openUni() {
    const send = new MuxSend(this.openId(false), this);
    if (!this.isClosed) this.writers.set(send.id, send);
    return send;
  }
  rttMs() {
    return this.conn.rtt();
  }
  close(code = Code.NoError, reason = "") {
    this.command((c) => c.close(code, reason));
  }
  /** @internal Runs a command on the mux, then carries out what it asks for. */
  command(f) {
    f(this.conn);
    this.drain();
  }
  /** @internal */
  stopStream(id, code) {
    this.readers.delete(id);
    this.command((c) => c.stop(id, code));
  }
  /**
   * The id of a new stream of ours. Once closed the mux opens nothing: the stream gets id -1
   * and its writes go nowhere (the `closed` promise has already said why).
   */
  openId(bidirectional) {
    const r = this.conn.open(bidirectional);
    return r.ok ? r.value : -1;
  }
  onMessage(data) {
    if (this.isClosed) return;
    if (data instanceof ArrayBuffer) {
      this.conn.handleMessage(this.now(), new Uint8Array(data));
    } else if (ArrayBuffer.isView(data)) {
      this.conn.handleMessage(this.now(), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else {
      this.conn.handleText();
    }
    this.drain();
  }
  onTimer() {
    this.timer = null;
    this.timerAt = null;
    this.conn.handleTimeout(this.now());
    this.drain();
  }
  /**
   * Carries out the mux's outputs, then sets the timer for its next deadline. Reentrant: a
   * callback that writes, stops or closes queues more outputs, which the running loop carries
   * out in order.
   */
  drain() {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let o = this.conn.pollOutput(); o; o = this.conn.pollOutput()) {
        switch (o.type) {
          case "transmit":
            try {
              this.ws.send(o.bytes);
            } catch {
            }
            break;
          case "opened": {
            const recv = new MuxRecv(o.id, this);
            this.readers.set(o.id, recv);
            this.onIncomingUni?.(recv);
            break;
          }
          case "data":
            this.readers.get(o.id)?.onData?.(o.data);
            break;
          case "fin": {
            const r = this.readers.get(o.id);
            this.readers.delete(o.id);
            r?.onFin?.();
            break;
          }
          case "reset": {
            const r = this.readers.get(o.id);
            this.readers.delete(o.id);
            r?.onReset?.(o.code);
            break;
          }
          case "stopped":
            this.writers.get(o.id)?.onStop?.(o.code);
            break;
          case "close": {
            this.closingLocally = true;
            try {
              this.ws.close(CLOSE_CODE_BASE + o.code, o.reason.slice(0, 120));
            } catch {
            }
            const reason = o.code === Code.ProtocolViolation ? `protocol violation: ${o.reason}` : o.reason || "closed locally";
            this.finishClose({ code: o.code, reason, local: true });
            break;
          }
        }
      }
    } finally {
      this.draining = false;
    }
    this.schedule();
  }
  /** One timer, for the mux's next deadline; none once closed. */
  schedule() {
    const at = this.conn.pollTimeout();
    if (at === this.timerAt) return;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at !== null) this.timer = this.setTimer(() => this.onTimer(), Math.max(0, Math.ceil(at - this.now())));
  }
  finishClose(info) {
    if (this.isClosed) return;
    this.isClosed = true;
    this.readers.clear();
    this.writers.clear();
    this.schedule();
    this.resolveClosed(info);
  }
};
function connectWebSocket(url, opts = {}) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = opts.create ? opts.create(url) : new WebSocket(url);
    } catch (e) {
      reject(new UnreachableError(`cannot open a WebSocket to ${url}: ${e.message}`, { cause: e }));
      return;
    }
    ws.binaryType = "arraybuffer";
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
      }
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new UnreachableError(`WebSocket ${url}: no answer within ${opts.timeoutMs ?? 1e4} ms`)),
      opts.timeoutMs ?? 1e4
    );
    opts.signal?.addEventListener("abort", () => fail(new UnreachableError(`WebSocket ${url}: cancelled`)));
    ws.onopen = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(new WebSocketTransport(ws, opts));
    };
    ws.onerror = () => {
    };
    ws.onclose = (ev) => {
      fail(
        new UnreachableError(
          `WebSocket ${url} failed (close code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}): the server is not reachable over TCP, refused the upgrade, or its TLS certificate is not trusted`
        )
      );
    };
  });
}

// packages/client/src/webtransport.ts
function webTransportAvailable() {
  return typeof globalThis.WebTransport === "function";
}
function wtError(message, code) {
  const Ctor = globalThis.WebTransportError;
  if (typeof Ctor === "function") {
    try {
      return new Ctor(message, { streamErrorCode: code });
    } catch {
    }
  }
  const e = new Error(message);
  e.streamErrorCode = code;
  return e;
}
function streamErrorCode(e) {
  const c = e?.streamErrorCode;
  return typeof c === "number" ? c : null;
}
var WtSend = class {
  onStop = null;
  writer = null;
  queue = [];
  done = false;
  failed = false;
  constructor(stream) {
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
      }
    );
  }
  write(bytes) {
    if (!this.done) this.enqueue(["w", bytes]);
  }
  finish() {
    if (this.done) return;
    this.done = true;
    this.enqueue(["fin"]);
  }
  reset(code) {
    if (this.done) return;
    this.done = true;
    this.enqueue(["reset", code]);
  }
  enqueue(op) {
    if (this.failed) return;
    if (this.writer) this.apply(op);
    else this.queue.push(op);
  }
  apply(op) {
    const w = this.writer;
    if (!w) return;
    if (op[0] === "w") w.write(op[1]).catch(() => {
    });
    else if (op[0] === "fin") w.close().catch(() => {
    });
    else w.abort(wtError("voq reset", op[1])).catch(() => {
    });
  }
  stopped(e) {
    const code = streamErrorCode(e);
    this.done = true;
    if (code !== null) this.onStop?.(code);
  }
};
var WtRecv = class {
  constructor(id, stream) {
    this.id = id;
    Promise.resolve(stream).then(
      (s) => {
        this.reader = s.getReader();
        if (this.stopCode !== null) this.cancel(this.stopCode);
        else void this.pump();
      },
      () => {
      }
    );
  }
  id;
  onData = null;
  onFin = null;
  onReset = null;
  reader = null;
  stopCode = null;
  stop(code) {
    if (this.stopCode !== null) return;
    this.stopCode = code;
    if (this.reader) this.cancel(code);
  }
  cancel(code) {
    this.reader?.cancel(wtError("voq stop", code)).catch(() => {
    });
  }
  async pump() {
    const reader = this.reader;
    if (!reader) return;
    try {
      for (; ; ) {
        const { value, done: done2 } = await reader.read();
        if (this.stopCode !== null) return;
        if (done2) {
          this.onFin?.();
          return;
        }
        if (value && value.length) this.onData?.(value);
      }
    } catch (e) {
      if (this.stopCode !== null) return;
      const code = streamErrorCode(e);
      if (code !== null) this.onReset?.(code);
    }
  }
};
var WebTransportTransport = class {
  constructor(wt) {
    this.wt = wt;
    this.closed = wt.closed.then(
      (info) => ({
        code: info?.closeCode ?? null,
        reason: info?.reason || "WebTransport session closed",
        local: this.closingLocally
      }),
      (e) => ({
        code: null,
        reason: `WebTransport connection lost: ${e?.message ?? String(e)}`,
        local: this.closingLocally
      })
    );
    void this.closed.then(() => {
      if (this.statsTimer) clearInterval(this.statsTimer);
    });
    void this.acceptLoop();
    const getStats = wt.getStats;
    if (typeof getStats === "function") {
      const poll = () => getStats.call(wt).then((s) => {
        if (typeof s?.smoothedRtt === "number" && s.smoothedRtt > 0) this.rtt = s.smoothedRtt;
      }).catch(() => {
      });
      void poll();
      this.statsTimer = setInterval(poll, 1e3);
    }
  }
  wt;
  name = "webtransport";
  onIncomingUni = null;
  closed;
  nextRecvId = 1;
  rtt = null;
  statsTimer = null;
  closingLocally = false;
  openBidi() {
    const bidi = this.wt.createBidirectionalStream();
    const send = new WtSend(bidi.then((b) => b.writable));
    const recv = new WtRecv(0, bidi.then((b) => b.readable));
    return { send, recv };
  }
  openUni() {
    return new WtSend(this.wt.createUnidirectionalStream());
  }
  rttMs() {
    return this.rtt;
  }
  close(code = Code.NoError, reason = "") {
    this.closingLocally = true;
    try {
      this.wt.close({ closeCode: code, reason: reason.slice(0, 120) });
    } catch {
    }
  }
  async acceptLoop() {
    const reader = this.wt.incomingUnidirectionalStreams.getReader();
    try {
      for (; ; ) {
        const { value, done: done2 } = await reader.read();
        if (done2 || !value) return;
        const recv = new WtRecv(this.nextRecvId++, value);
        this.onIncomingUni?.(recv);
      }
    } catch {
    }
  }
};
async function connectWebTransport(url, opts = {}) {
  const Ctor = globalThis.WebTransport;
  if (typeof Ctor !== "function") throw new Error("this browser has no WebTransport");
  const options = {};
  if (opts.certificateHashes?.length) {
    options.serverCertificateHashes = opts.certificateHashes.map((value) => ({ algorithm: "sha-256", value }));
  }
  const wt = new Ctor(url, options);
  let timer;
  const abort = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${opts.timeoutMs ?? 1e4} ms`)), opts.timeoutMs ?? 1e4);
    opts.signal?.addEventListener("abort", () => reject(new Error("cancelled")));
  });
  try {
    await Promise.race([wt.ready, abort]);
  } catch (e) {
    try {
      wt.close();
    } catch {
    }
    wt.closed.catch(() => {
    });
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return new WebTransportTransport(wt);
}

// packages/client/src/connect.ts
function baseUrl(url) {
  if (url) return new URL(url, globalThis.location?.href);
  const loc = globalThis.location;
  if (!loc) throw new VoqError("invalid_state", "no server URL given and no page origin to default to");
  return new URL(loc.origin);
}
async function fetchServerConfig(base, opts = {}) {
  const f = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const url = new URL("/voq/config.json", base);
  const ac = new AbortController();
  const timeoutMs = opts.timeoutMs ?? 1e4;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, timeoutMs);
  opts.signal?.addEventListener("abort", () => ac.abort());
  let res;
  try {
    res = await f(url.href, { cache: "no-store", signal: ac.signal });
  } catch (e) {
    const why = timedOut ? `no answer within ${timeoutMs / 1e3} s` : e.message;
    throw new UnreachableError(`cannot reach the voq server at ${base.origin}: GET /voq/config.json failed (${why})`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) {
    throw new UnreachableError(`${base.origin} does not look like a voq server: GET /voq/config.json answered HTTP ${res.status}`);
  }
  try {
    return await res.json();
  } catch (e) {
    throw new ProtocolError(`${url.href} is not JSON: ${e.message}`);
  }
}
function certificateHashes(config) {
  const out = [];
  for (const h of config.webtransport?.certificate_hashes ?? []) {
    if (h.algorithm !== "sha-256") continue;
    const bytes = fromHex(h.value);
    if (!bytes || bytes.length !== 32) {
      throw new CertificateError(`the server published a malformed sha-256 certificate hash: "${h.value}"`);
    }
    out.push(bytes);
  }
  return out;
}
function webSocketUrl(base, config) {
  const u = new URL(config.websocket?.path ?? "/voq", base);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}
function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set("token", token);
  return u.href;
}
function raceTransports(primary, fallback, headStartMs, now = () => performance.now()) {
  return new Promise((resolve, reject) => {
    const t02 = now();
    const dials = [primary, fallback].filter((d) => d !== null);
    const attempts = dials.map((d) => ({ transport: d.name, startedMs: null, result: "not_started" }));
    const controllers = dials.map(() => null);
    const errors = [];
    let won = false;
    let running = 0;
    let timer;
    if (dials.length === 0) {
      reject(new UnsupportedError("no transport to try"));
      return;
    }
    const maybeFail = () => {
      if (won || running > 0) return;
      if (attempts.some((a) => a.result === "not_started")) return;
      reject(Object.assign(new Error("every transport failed"), { errors, attempts }));
    };
    const start = (i) => {
      const d = dials[i];
      const a = attempts[i];
      if (!d || !a || a.result !== "not_started" || won) return;
      const ac = new AbortController();
      controllers[i] = ac;
      a.startedMs = Math.round(now() - t02);
      a.result = "cancelled";
      running += 1;
      d.dial(ac.signal).then(
        (t) => {
          running -= 1;
          a.endedMs = Math.round(now() - t02);
          if (won) {
            a.result = "lost";
            t.close(0, "another transport connected first");
            return;
          }
          won = true;
          a.result = "won";
          clearTimeout(timer);
          controllers.forEach((c, j) => {
            if (j !== i) c?.abort();
          });
          resolve({ transport: t, winner: d.name, attempts, errors });
        },
        (e) => {
          running -= 1;
          if (won) return;
          a.endedMs = Math.round(now() - t02);
          a.result = "failed";
          a.error = e?.message ?? String(e);
          errors.push(e);
          if (i === 0) {
            clearTimeout(timer);
            start(1);
          }
          maybeFail();
        }
      );
    };
    start(0);
    if (dials.length > 1) timer = setTimeout(() => start(1), Math.max(0, headStartMs));
  });
}
async function connect(opts = {}) {
  const now = opts.now ?? (() => performance.now());
  const t02 = now();
  const base = baseUrl(opts.url);
  const choice = opts.transport ?? "auto";
  const timeoutMs = opts.timeoutMs ?? 1e4;
  const fetchOpts = { timeoutMs };
  if (opts.fetch) fetchOpts.fetch = opts.fetch;
  if (opts.signal) fetchOpts.signal = opts.signal;
  const config = opts.config ?? await fetchServerConfig(base, fetchOpts);
  const hasWt = opts.hasWebTransport ?? webTransportAvailable();
  const token = typeof opts.token === "function" ? await opts.token() : opts.token;
  const wtUrl = config.webtransport?.url && withToken(config.webtransport.url, token);
  const hashes = certificateHashes(config);
  const wsUrl = withToken(webSocketUrl(base, config), token);
  const dialWt = opts.dialWebTransport ?? ((url, h, signal) => connectWebTransport(url, { certificateHashes: h, signal, timeoutMs }));
  const dialWs = opts.dialWebSocket ?? ((url, signal) => connectWebSocket(url, { signal, timeoutMs }));
  const wt = hasWt && wtUrl ? { name: "webtransport", dial: (s) => dialWt(wtUrl, hashes, s) } : null;
  const ws = { name: "websocket", dial: (s) => dialWs(wsUrl, s) };
  if (choice === "webtransport" && !wt) {
    throw new UnsupportedError(
      hasWt ? `the server at ${base.origin} does not offer WebTransport` : 'this browser has no WebTransport (use transport "websocket" or "auto")'
    );
  }
  const primary = choice === "websocket" ? null : wt;
  const fallback = choice === "webtransport" ? null : ws;
  const unavailable = choice === "auto" && !wt ? [{ transport: "webtransport", startedMs: null, result: "unavailable", error: hasWt ? "the server offers no WebTransport" : "no WebTransport in this browser" }] : [];
  try {
    const r = await raceTransports(primary, fallback, opts.headStartMs ?? 300, now);
    return { transport: r.transport, config, winner: r.winner, attempts: [...unavailable, ...r.attempts], connectMs: Math.round(now() - t02) };
  } catch (e) {
    const attempts = (e.attempts ?? []).concat(unavailable);
    const detail = attempts.filter((a) => a.error).map((a) => `${a.transport}: ${a.error}`).join("; ");
    if (e instanceof VoqError) throw e;
    if (primary && !fallback) {
      const f = opts.fetch ?? globalThis.fetch.bind(globalThis);
      const up = await f(new URL("/healthz", base).href, { cache: "no-store" }).then(
        (r) => r.ok,
        () => false
      );
      if (up) {
        throw new CertificateError(
          `the server at ${base.origin} is up, but the WebTransport handshake with ${wtUrl} failed (${detail}): most likely its certificate does not match the pinned hash (reload the page after a server restart) or UDP is blocked; transport "websocket" or "auto" avoids it`,
          { cause: e }
        );
      }
    }
    throw new UnreachableError(`cannot connect to the voq server at ${base.origin}: ${detail || e.message}`, { cause: e });
  }
}

// packages/client/src/emitter.ts
var Emitter = class {
  listeners = /* @__PURE__ */ new Map();
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(type, set);
    }
    set.add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }
  /** Resolves with the next event of `type`. */
  once(type) {
    return new Promise((resolve) => {
      const off = this.on(type, (e) => {
        off();
        resolve(e);
      });
    });
  }
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  emit(type, event) {
    for (const key of [type, "*"]) {
      for (const fn of [...this.listeners.get(key) ?? []]) {
        try {
          fn(event);
        } catch (e) {
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
  }
};

// packages/client/src/reconnect.ts
var DEFAULT_RECONNECT_CONFIG = {
  enabled: true,
  maxAttempts: 5,
  backoffMs: [250, 500, 1e3, 2e3, 4e3, 8e3],
  maxTurns: 64,
  maxBytes: 16 * 1024 * 1024
};
var Reconnector = class {
  config;
  _state = "idle";
  _attempt = 0;
  deadline = null;
  planned = false;
  goingAway = false;
  _reconnects = 0;
  kept = [];
  bytes = 0;
  out = [];
  constructor(config = {}) {
    this.config = { ...DEFAULT_RECONNECT_CONFIG, ...config };
  }
  // ---- the connection ----
  /** A dial succeeded (the first one, or a reconnect): connected, the attempt count starts over. */
  handleConnected(_now) {
    if (this._state === "dialing") this._reconnects += 1;
    else if (this._state !== "idle") return;
    this._state = "connected";
    this._attempt = 0;
    this.deadline = null;
    this.goingAway = false;
  }
  /**
   * The connection is gone (`planned`: the client is leaving on purpose, so the first dial comes
   * at once). Ignored unless connected.
   */
  handleLost(now, reason, planned = false) {
    if (this._state !== "connected") return;
    this.goingAway = false;
    if (!this.config.enabled) {
      this.giveUp("disabled", reason);
      return;
    }
    this.push({ type: "replay", turns: this.kept.map((k) => ({ turn: k.turn, itemId: k.itemId, packets: k.packets, ended: k.ended })) });
    this.planned = planned;
    this.next(now, reason);
  }
  /** The dial that `dial` asked for failed with `reason`: wait for the next, or give up. */
  handleDialFailed(now, reason) {
    if (this._state !== "dialing") return;
    this.next(now, reason);
  }
  /** The server announced `going_away`: leave it at the next {@link handleIdle}. */
  handleGoingAway(_now) {
    if (this._state === "connected" && this.config.enabled) this.goingAway = true;
  }
  /** Nothing is being said, sent or played: a server that is going away is left now (`leave`). */
  handleIdle(now) {
    if (this._state !== "connected" || !this.goingAway) return;
    const reason = "the server is going away";
    this.push({ type: "leave", reason });
    this.handleLost(now, reason, true);
  }
  /** When {@link handleTimeout} wants to run next (same clock as `now`), or `null`. */
  pollTimeout() {
    return this.deadline;
  }
  /** Dials when the wait is over. */
  handleTimeout(now) {
    if (this._state !== "waiting" || this.deadline === null || now < this.deadline) return;
    this.deadline = null;
    this._state = "dialing";
    this.push({ type: "dial", attempt: this._attempt });
  }
  /** The client is closing: nothing more comes out, every later input is ignored. */
  close() {
    this._state = "closed";
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
  turnStarted(turn, itemId) {
    if (this.done) return;
    const k = this.find(turn);
    if (k) k.itemId = itemId;
    else this.kept.push({ turn, itemId, packets: [], bytes: 0, ended: false });
  }
  /** The audio kept of `turn` (the reconnector's own list: read it before the next input). */
  packetsOf(turn) {
    return this.done ? null : this.find(turn)?.packets ?? null;
  }
  /** A packet of a started turn went to the session. */
  turnAudio(turn, payload, samples) {
    const k = this.done ? void 0 : this.find(turn);
    if (!k) return;
    k.packets.push([payload, samples]);
    k.bytes += payload.length;
    this.bytes += payload.length;
    this.enforceLimits();
  }
  /** The turn was ended (FIN): kept until {@link handleCommitted} or {@link handleTurnStopped}. */
  turnEnded(turn) {
    const k = this.done ? void 0 : this.find(turn);
    if (!k) return;
    k.ended = true;
    this.enforceLimits();
  }
  /** The turn was discarded (`clearInput`): nothing of it is kept. */
  turnDiscarded(turn) {
    const i = this.kept.findIndex((k) => k.turn === turn);
    if (i >= 0) this.remove(i);
  }
  /** `input_audio_buffer.committed` for `itemId`: the server has the turn; it is not kept any more. */
  handleCommitted(itemId) {
    const i = this.kept.findIndex((k) => k.itemId === itemId);
    if (i >= 0) this.remove(i);
  }
  /**
   * The server stopped the turn `itemId`'s stream with `code` (STOP_SENDING: it refused the
   * turn): it is forgotten, not sent again after a reconnect. `going_away` is the exception:
   * the server is shutting down, not refusing the turn, so the turn stays kept (with the audio
   * that still comes for it) and is sent again to the next server.
   */
  handleTurnStopped(itemId, code) {
    if (code === Code.GoingAway) return;
    this.handleCommitted(itemId);
  }
  // ---- outputs ----
  /** The next action, or `null`. */
  poll() {
    return this.out.shift() ?? null;
  }
  // ---- what happened ----
  get state() {
    return this._state;
  }
  /** The current (or last) dial attempt since the connection was lost; 0 while connected. */
  get attempt() {
    return this._attempt;
  }
  /** Successful reconnects. */
  get reconnects() {
    return this._reconnects;
  }
  /** Turns kept for a resend: unconfirmed ended ones and the open one. */
  get keptTurns() {
    return this.kept.length;
  }
  /** Payload bytes kept for resends. */
  get keptBytes() {
    return this.bytes;
  }
  // ---- internals ----
  get done() {
    return this._state === "gave_up" || this._state === "closed";
  }
  push(a) {
    this.out.push(a);
  }
  find(turn) {
    return this.kept.find((k) => k.turn === turn);
  }
  remove(i) {
    const [k] = this.kept.splice(i, 1);
    if (k) this.bytes -= k.bytes;
    return k;
  }
  /** The next dial attempt after a loss or a failure, or the end. */
  next(now, reason) {
    const attempt = this._attempt + 1;
    if (attempt > this.config.maxAttempts) {
      this.giveUp("exhausted", reason);
      return;
    }
    this._attempt = attempt;
    const b = this.config.backoffMs;
    const delayMs = attempt === 1 && this.planned ? 0 : b[Math.min(attempt - 1, b.length - 1)] ?? 1e3;
    this._state = "waiting";
    this.deadline = now + delayMs;
    this.push({ type: "wait", attempt, delayMs, untilMs: this.deadline, reason });
  }
  giveUp(kind, reason) {
    this._state = "gave_up";
    this.deadline = null;
    this.kept = [];
    this.bytes = 0;
    this.push({ type: "give_up", kind, reason, attempts: this._attempt });
  }
  /** Forgets the oldest ended turns while over `maxTurns` or `maxBytes`; the open turn stays. */
  enforceLimits() {
    let ended = 0;
    for (const k of this.kept) if (k.ended) ended += 1;
    for (; ; ) {
      const limit = ended > this.config.maxTurns ? "turns" : this.bytes > this.config.maxBytes ? "bytes" : null;
      if (!limit) return;
      const i = this.kept.findIndex((k2) => k2.ended);
      if (i < 0) return;
      const k = this.remove(i);
      ended -= 1;
      if (k) this.push({ type: "forget", turn: k.turn, itemId: k.itemId, limit });
    }
  }
};

// packages/client/src/wire.ts
var MAX_EVENT_LEN = 64 * 1024;
var MAX_HEADER_LEN = 4 * 1024;
var MAX_FRAME_PAYLOAD = 8 * 1024;
var FRAME_OVERHEAD = 6;
var StreamKind = { UserAudio: 1, AgentAudio: 2 };
function wireError(kind, message) {
  const code = {
    event_too_large: Code.ProtocolViolation,
    unknown_stream_kind: Code.StreamRefused,
    header_too_large: Code.BadStreamHeader,
    bad_header: Code.BadStreamHeader,
    frame_too_large: Code.FrameTooLarge,
    failed: Code.ProtocolViolation
  }[kind];
  return { kind, code, message };
}
var WireEncodeError = class extends Error {
  constructor(error) {
    super(error.message);
    this.error = error;
    this.name = "WireEncodeError";
  }
  error;
};
function encodeEvent(json) {
  const body = typeof json === "string" ? utf8.encode(json) : json;
  if (body.length > MAX_EVENT_LEN) {
    throw new WireEncodeError(
      wireError("event_too_large", `control event of ${body.length} bytes exceeds the ${MAX_EVENT_LEN} byte limit`)
    );
  }
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}
function headerJson(header) {
  const ordered = { item_id: header.item_id };
  if (header.response_id !== void 0) ordered.response_id = header.response_id;
  ordered.codec = header.codec;
  ordered.sample_rate = header.sample_rate;
  ordered.frame_ms = header.frame_ms;
  return JSON.stringify(ordered);
}
function encodeHeader(kind, header) {
  const body = utf8.encode(typeof header === "string" ? header : headerJson(header));
  if (body.length > MAX_HEADER_LEN) {
    throw new WireEncodeError(
      wireError("header_too_large", `audio stream header of ${body.length} bytes exceeds the ${MAX_HEADER_LEN} byte limit`)
    );
  }
  const out = new Uint8Array(3 + body.length);
  out[0] = kind;
  new DataView(out.buffer).setUint16(1, body.length);
  out.set(body, 3);
  return out;
}
function encodeFrame(pts, payload) {
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new WireEncodeError(
      wireError("frame_too_large", `audio frame payload of ${payload.length} bytes exceeds the ${MAX_FRAME_PAYLOAD} byte limit`)
    );
  }
  const out = new Uint8Array(FRAME_OVERHEAD + payload.length);
  const view = new DataView(out.buffer);
  view.setUint16(0, payload.length);
  view.setUint32(2, pts >>> 0);
  out.set(payload, FRAME_OVERHEAD);
  return out;
}
var EventDecoder = class {
  buf = new ByteQueue();
  skipping = 0;
  push(bytes) {
    const skip = Math.min(this.skipping, bytes.length);
    this.skipping -= skip;
    this.buf.push(skip ? bytes.subarray(skip) : bytes);
  }
  /** The next complete event, or `null`. Call until `null` after every `push`. */
  poll() {
    if (this.skipping > 0 || this.buf.length < 4) return null;
    const len = this.buf.u32(0);
    if (len > MAX_EVENT_LEN) {
      const drop = Math.min(this.buf.length - 4, len);
      this.buf.consume(4 + drop);
      this.skipping = len - drop;
      return { type: "skipped", length: len };
    }
    if (this.buf.length < 4 + len) return null;
    const body = this.buf.slice(4, 4 + len);
    this.buf.consume(4 + len);
    return { type: "event", body };
  }
  /** Bytes of an incomplete event (non-zero at end of stream means truncation). */
  pending() {
    return this.buf.length + this.skipping;
  }
};
function isU32(v) {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 4294967295;
}
function parseHeader(body) {
  let value;
  try {
    value = JSON.parse(utf8Strict.decode(body));
  } catch (e) {
    return wireError("bad_header", `malformed audio stream header: ${e.message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return wireError("bad_header", "malformed audio stream header: not a JSON object");
  }
  const h = value;
  const bad = (what) => wireError("bad_header", `malformed audio stream header: ${what}`);
  if (typeof h.item_id !== "string") return bad('"item_id" must be a string');
  if (h.response_id !== void 0 && h.response_id !== null && typeof h.response_id !== "string") {
    return bad('"response_id" must be a string');
  }
  if (typeof h.codec !== "string") return bad('"codec" must be a string');
  if (!isU32(h.sample_rate)) return bad('"sample_rate" must be an unsigned integer');
  if (!isU32(h.frame_ms)) return bad('"frame_ms" must be an unsigned integer');
  if (h.sample_rate === 0 || h.frame_ms === 0) return bad("sample_rate and frame_ms must be > 0");
  const header = {
    item_id: h.item_id,
    codec: h.codec,
    sample_rate: h.sample_rate,
    frame_ms: h.frame_ms
  };
  if (typeof h.response_id === "string") header.response_id = h.response_id;
  return header;
}
var AudioStreamDecoder = class {
  buf = new ByteQueue();
  state = "preamble";
  push(bytes) {
    if (this.state !== "failed") this.buf.push(bytes);
  }
  /** The next header or frame; `item: null` when more bytes are needed. Call until then. */
  poll() {
    if (this.state === "failed") return { ok: false, error: wireError("failed", "the stream already failed") };
    const r = this.state === "preamble" ? this.preamble() : this.frame();
    if (!r.ok) {
      this.state = "failed";
      this.buf.clear();
    }
    return r;
  }
  /** Bytes of an incomplete header or frame (non-zero at FIN means a truncated stream). */
  pending() {
    return this.buf.length;
  }
  preamble() {
    if (this.buf.length < 3) return { ok: true, item: null };
    const kind = this.buf.at(0);
    if (kind !== StreamKind.UserAudio && kind !== StreamKind.AgentAudio) {
      return {
        ok: false,
        error: wireError("unknown_stream_kind", `unknown audio stream kind 0x${kind.toString(16).padStart(2, "0")}`)
      };
    }
    const len = this.buf.u16(1);
    if (len > MAX_HEADER_LEN) {
      return {
        ok: false,
        error: wireError("header_too_large", `audio stream header of ${len} bytes exceeds the ${MAX_HEADER_LEN} byte limit`)
      };
    }
    if (this.buf.length < 3 + len) return { ok: true, item: null };
    const header = parseHeader(this.buf.slice(3, 3 + len));
    if ("kind" in header) return { ok: false, error: header };
    this.buf.consume(3 + len);
    this.state = "frames";
    return { ok: true, item: { type: "header", kind, header } };
  }
  frame() {
    if (this.buf.length < FRAME_OVERHEAD) return { ok: true, item: null };
    const len = this.buf.u16(0);
    if (len > MAX_FRAME_PAYLOAD) {
      return {
        ok: false,
        error: wireError("frame_too_large", `audio frame payload of ${len} bytes exceeds the ${MAX_FRAME_PAYLOAD} byte limit`)
      };
    }
    if (this.buf.length < FRAME_OVERHEAD + len) return { ok: true, item: null };
    const pts = this.buf.u32(2);
    const payload = this.buf.slice(FRAME_OVERHEAD, FRAME_OVERHEAD + len);
    this.buf.consume(FRAME_OVERHEAD + len);
    return { ok: true, item: { type: "frame", pts, payload } };
  }
};

// packages/client/src/session.ts
var DEFAULT_SESSION_CONFIG = {
  inputCodec: "pcm16",
  outputCodec: "pcm16",
  startThresholdMs: 100,
  serverVad: false,
  pingIntervalMs: 1e3
};
var ms = (samples) => Math.floor(samples * 1e3 / SAMPLE_RATE);
var done = (s) => s === "finished" || s === "flushed";
var problemCode = (code) => {
  const name = codeName(code);
  return ERROR_CODES.includes(name) ? name : "protocol_violation";
};
var ClientSession = class {
  config;
  events = new EventDecoder();
  inbound = /* @__PURE__ */ new Map();
  /** Streams of the server this session stopped: what still arrives on them is dropped. */
  refused = /* @__PURE__ */ new Set();
  _session = null;
  reportInterval = 100;
  nextReport = null;
  nextPing = null;
  pingId = 0;
  pingsInFlight = /* @__PURE__ */ new Map();
  _rttMs = null;
  _turns = [];
  sending = null;
  /**
   * Finished turns' streams the server may still stop (→ index in `_turns`), until it confirms
   * the turn; bounded, since a server that never answers must not grow a long call's
   * bookkeeping (as in the Rust session).
   */
  finished = /* @__PURE__ */ new Map();
  replies = [];
  nextTurn = 1;
  out = [];
  outHead = 0;
  /** A session that asks for `config`'s codecs and mode in its first event. */
  constructor(config = {}) {
    this.config = { ...DEFAULT_SESSION_CONFIG, ...config };
    const session2 = {
      type: "session.update",
      session: {
        type: "realtime",
        audio: {
          input: {
            format: audioFormat(this.config.inputCodec),
            turn_detection: this.config.serverVad ? { type: "server_vad" } : null
          },
          output: { format: audioFormat(this.config.outputCodec) }
        }
      }
    };
    if (this.config.sendAheadMs !== void 0) session2.session.voq = { send_ahead_ms: this.config.sendAheadMs };
    if (this.config.resume) session2.session.voq = { ...session2.session.voq, resume: this.config.resume };
    this.send(session2);
  }
  /** The resume token of the latest `session.created` / `voq.session.resumed`, if any. */
  get resumeToken() {
    return this._session?.voq.resume_token ?? null;
  }
  /**
   * Where this client stands in the reply it is receiving (no `response.done` yet, not
   * interrupted): what a resume request names so the reply goes on from there. `null` if none.
   */
  get resumePoint() {
    const r = this.replies[this.replies.length - 1];
    if (!r || r.stats.status !== void 0 || r.stats.interrupt || done(r.state)) return null;
    return { response_id: r.stats.responseId, from_pts: r.receivedEnd, played_ms: ms(r.played) };
  }
  /**
   * Goes on where `from` (the same session on a lost connection) left off: its current reply
   * (its playout keeps playing, and frames of the new stream for the same response join it)
   * and the numbering of its item ids (the server refuses an item id it has seen).
   */
  continueFrom(from) {
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
  startTurn(now, resume) {
    if (this.sending) this.endTurn(now);
    const index = this._turns.length;
    const itemId = resume?.itemId ?? `item_c${this.nextTurn}`;
    const stream = this.nextTurn;
    this.nextTurn += 1;
    const bytes = encodeHeader(StreamKind.UserAudio, {
      item_id: itemId,
      codec: this.config.inputCodec,
      sample_rate: SAMPLE_RATE,
      frame_ms: FRAME_MS
    });
    this.push({ type: "open_stream", stream, bytes });
    this._turns.push({
      itemId,
      framesSent: resume?.frames ?? 0,
      bytesSent: resume?.bytes ?? 0,
      audioMsSent: ms(resume?.pts ?? 0),
      framesDropped: 0
    });
    this.sending = { stream, nextPts: resume?.pts ?? 0, index, stopped: false };
    return itemId;
  }
  /** Whether a user turn is open. */
  get turnOpen() {
    return this.sending !== null;
  }
  /**
   * One encoded frame of user audio, `samples` long, on the open turn (one is started if none
   * is open). Throws a `WireEncodeError` for payloads over the frame limit. If the server has
   * stopped the turn's stream, the frame is dropped (counted in `framesDropped`).
   */
  sendAudio(now, payload, samples) {
    if (!this.sending) this.startTurn(now);
    const s = this.sending;
    if (!s) return;
    if (s.stopped) {
      const turn2 = this._turns[s.index];
      if (turn2) turn2.framesDropped += 1;
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
    this.push({ type: "stream_data", stream: s.stream, bytes });
  }
  /**
   * Ends the open turn (stream FIN): in push-to-talk mode the server commits it. A turn whose
   * stream the server stopped is closed without a FIN (the stream is gone); the next
   * `startTurn`/`sendAudio` opens a new stream either way.
   */
  endTurn(now) {
    const s = this.sending;
    if (!s) return;
    this.sending = null;
    const turn = this._turns[s.index];
    if (turn) turn.endedAt = now;
    if (!s.stopped) {
      this.push({ type: "finish_stream", stream: s.stream });
      this.rememberFinished(s.stream, s.index);
    }
  }
  /** Server-VAD mode: ask the server to commit what it has now. */
  commit() {
    this.send({ type: "input_audio_buffer.commit" });
  }
  /**
   * Discards the open turn: resets its stream (`cancelled`; not one the server stopped, which
   * is gone already) and tells the server.
   */
  clear() {
    const s = this.sending;
    this.sending = null;
    if (s && !s.stopped) this.push({ type: "reset_stream", stream: s.stream, code: Code.Cancelled });
    this.send({ type: "input_audio_buffer.clear" });
  }
  /**
   * The server sent STOP_SENDING on one of our user-turn streams: it refused the turn
   * (`going_away`, too many turns, a bad header…). The turn records `stoppedCode` and a
   * `turn_stopped` output says so. If it is the open turn, nothing more is written for it:
   * `sendAudio` drops its frames (`framesDropped`), `endTurn` closes it without a FIN. A turn
   * already finished (stopped after its FIN, before the server confirmed it) only records the
   * code. Unknown streams, confirmed turns and a second stop of the same stream are ignored.
   */
  handleStreamStopped(_now, stream, code) {
    let index;
    const open = this.sending;
    if (open && open.stream === stream) {
      if (open.stopped) return;
      open.stopped = true;
      index = open.index;
    } else {
      index = this.finished.get(stream);
      if (index === void 0) return;
      this.finished.delete(stream);
    }
    const turn = this._turns[index];
    if (!turn) return;
    turn.stoppedCode = code;
    this.push({ type: "turn_stopped", itemId: turn.itemId, code });
  }
  /** Asks the server to stop the current response (it resets the stream: `cancelled`). */
  cancelResponse() {
    const r = this.replies[this.replies.length - 1];
    const ev = { type: "response.cancel" };
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
  handleStreamData(now, stream, bytes) {
    if (this.refused.has(stream)) return;
    let entry = this.inbound.get(stream);
    if (!entry) {
      entry = { decoder: new AudioStreamDecoder(), reply: null, lastPts: null };
      this.inbound.set(stream, entry);
    }
    entry.decoder.push(bytes);
    for (; ; ) {
      const cur = this.inbound.get(stream);
      if (!cur) return;
      const r = cur.decoder.poll();
      if (!r.ok) {
        this.refuse(stream, r.error.code, `agent audio stream: ${r.error.message}`);
        return;
      }
      if (!r.item) return;
      if (r.item.type === "header") {
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
  handleStreamFin(_now, stream) {
    if (this.refused.delete(stream)) return;
    const entry = this.inbound.get(stream);
    this.inbound.delete(stream);
    if (entry && entry.decoder.pending() > 0) {
      const where = entry.reply ? "a frame" : "its header";
      this.problem("protocol_violation", `agent audio stream ended inside ${where} (${entry.decoder.pending()} bytes)`);
    }
    this.endReply(stream);
  }
  /**
   * The server reset a response stream: cancelled (stop playing at once) or failed (play what
   * arrived).
   */
  handleStreamReset(now, stream, code) {
    this.inbound.delete(stream);
    this.refused.delete(stream);
    const r = this.replyByStream(stream);
    if (!r) return;
    r.ended = true;
    if (r.stats.interrupt) {
      r.stats.interrupt.resetAt ??= now;
    } else if (code === Code.Cancelled) {
      if (!done(r.state)) this.flushReply(r, "cancelled");
    } else if (!done(r.state)) {
      this.push({ type: "playout_finish", responseId: r.stats.responseId });
    }
  }
  /** A snapshot of the worklet's playout (on every state change, and periodically). */
  handlePlayout(now, snap) {
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
    if (snap.state === "playing") {
      this.push({ type: "playback", change: before === "stalled" ? "resumed" : "started", responseId: id, playedMs });
    } else if (snap.state === "stalled") {
      this.push({ type: "playback", change: "underrun", responseId: id, playedMs });
    } else if (snap.state === "finished") {
      this.push({ type: "playback", change: "ended", responseId: id, playedMs, reason: r.stats.status === "failed" ? "failed" : "finished" });
    }
    if (snap.state !== "flushed") this.report(now);
  }
  /**
   * Barge-in. The shell has already silenced the output and flushed the playout (the next
   * rendered quantum is silent) and passes the exact samples played; the session sends
   * `conversation.item.truncate` with that position and STOP_SENDING (`cancelled`) on the
   * response stream. Returns the played position in ms, or `null` if no response was playing.
   */
  interrupt(now, playedSamples) {
    const r = this.replies[this.replies.length - 1];
    if (!r || r.stats.interrupt || done(r.state)) return null;
    if (playedSamples !== void 0) r.played = playedSamples;
    const playedMs = ms(r.played);
    let unplayedBytes = 0;
    for (const [pts, bytes] of r.frames) if (pts >= r.played) unplayedBytes += bytes;
    r.stats.playedMs = playedMs;
    r.stats.bufferedMs = 0;
    r.stats.interrupt = { at: now, playedMs, unplayedBytes };
    this.flushReply(r, "interrupted");
    this.send({
      type: "conversation.item.truncate",
      item_id: r.stats.itemId,
      content_index: 0,
      audio_end_ms: playedMs
    });
    if (r.stream !== null && !r.ended) {
      this.push({ type: "stop_sending", stream: r.stream, code: Code.Cancelled });
    }
    return playedMs;
  }
  // ---- control ----
  /** Bytes received on the control stream. */
  handleControl(now, bytes) {
    this.events.push(bytes);
    for (let d = this.events.poll(); d; d = this.events.poll()) {
      if (d.type === "skipped") {
        this.problem("event_too_large", `server event of ${d.length} bytes skipped`);
        continue;
      }
      const parsed = parseServerEvent(d.body);
      if (parsed.ok) this.onEvent(now, parsed.event);
      else this.problem(parsed.error.code, `server event: ${parsed.error.message}`);
    }
  }
  /** When {@link handleTimeout} wants to run next (same clock as `now`), or `null`. */
  pollTimeout() {
    if (this.nextReport === null) return this.nextPing;
    if (this.nextPing === null) return this.nextReport;
    return Math.min(this.nextReport, this.nextPing);
  }
  /** Sends the periodic playback report and the `voq.ping` when due. */
  handleTimeout(now) {
    if (this.nextReport !== null && this.nextReport <= now) this.report(now);
    if (this.nextPing !== null && this.nextPing <= now) this.ping(now);
  }
  /**
   * Smoothed round-trip time of `voq.ping` → `voq.pong` on the control stream (ms), or `null`
   * before the first answer. It includes the server's (tiny) event handling and any queueing
   * behind other data on the control stream.
   */
  get rttMs() {
    return this._rttMs;
  }
  ping(now) {
    const interval = this.config.pingIntervalMs;
    if (interval === null) {
      this.nextPing = null;
      return;
    }
    this.pingId += 1;
    this.pingsInFlight.set(this.pingId, now);
    for (const [id, at] of this.pingsInFlight) if (now - at > 10 * interval) this.pingsInFlight.delete(id);
    this.send({ type: "voq.ping", id: this.pingId });
    this.nextPing = now + interval;
  }
  /** The next output, or `null`. */
  poll() {
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
  get queued() {
    return this.out.length - this.outHead;
  }
  // ---- what happened ----
  /** The session as the server described it (after `session.created`/`session.updated`). */
  get session() {
    return this._session;
  }
  get turns() {
    return this._turns;
  }
  get responses() {
    return this.replies.map((r) => r.stats);
  }
  /** The response being received or played, if any. */
  get currentResponse() {
    const r = this.replies[this.replies.length - 1];
    return r && !done(r.state) ? r.stats : null;
  }
  /** Whether the latest response has been played (or flushed) to its end. */
  get playbackDone() {
    const r = this.replies[this.replies.length - 1];
    return !!r && r.ended && done(r.state);
  }
  get bufferedMs() {
    const r = this.replies[this.replies.length - 1];
    return r && !done(r.state) ? ms(r.buffered) : 0;
  }
  // ---- internals ----
  push(o) {
    this.out.push(o);
  }
  send(event) {
    this.push({ type: "control", bytes: encodeEvent(JSON.stringify(event)) });
  }
  /** Something the server sent that the session could not use: always the peer's doing. */
  problem(code, message) {
    this.push({ type: "problem", code, message });
  }
  /**
   * Stops a stream of the server that broke a rule (STOP_SENDING with `code`, a `problem` with
   * its `error.code`) and drops whatever still arrives on it; its response plays what arrived.
   */
  refuse(stream, code, message) {
    this.problem(problemCode(code), message);
    this.push({ type: "stop_sending", stream, code });
    this.inbound.delete(stream);
    const MAX_REFUSED = 64;
    if (this.refused.size >= MAX_REFUSED) this.refused.delete(this.refused.values().next().value);
    this.refused.add(stream);
    this.endReply(stream);
  }
  /** The response on `stream` gets no more audio: play out what is queued. */
  endReply(stream) {
    const r = this.replyByStream(stream);
    if (r && !r.ended) {
      r.ended = true;
      if (!done(r.state)) this.push({ type: "playout_finish", responseId: r.stats.responseId });
    }
  }
  rememberFinished(stream, index) {
    const MAX_UNCONFIRMED = 64;
    if (this.finished.size >= MAX_UNCONFIRMED) {
      const oldest = Math.min(...this.finished.keys());
      this.finished.delete(oldest);
    }
    this.finished.set(stream, index);
  }
  replyByStream(stream) {
    return this.replies.find((r) => r.stream === stream);
  }
  reply(responseId) {
    return this.replies.find((r) => r.stats.responseId === responseId);
  }
  flushReply(r, reason) {
    r.state = "flushed";
    r.buffered = 0;
    this.push({ type: "playout_flush", responseId: r.stats.responseId });
    this.push({ type: "playback", change: "ended", responseId: r.stats.responseId, playedMs: ms(r.played), reason });
  }
  newReply(responseId, itemId, codec) {
    const old = this.replies[this.replies.length - 1];
    if (old && !done(old.state)) this.flushReply(old, "superseded");
    const r = {
      stats: {
        responseId,
        itemId,
        bytesReceived: 0,
        framesReceived: 0,
        playedMs: 0,
        bufferedMs: 0,
        underruns: 0,
        stallMs: 0
      },
      stream: null,
      codec,
      state: "buffering",
      played: 0,
      buffered: 0,
      frames: [],
      ended: false,
      receivedEnd: 0
    };
    this.replies.push(r);
    this.push({ type: "playout_start", responseId, codec, startThresholdMs: this.config.startThresholdMs });
    return r;
  }
  onReplyHeader(now, stream, kind, header) {
    if (kind !== StreamKind.AgentAudio) {
      this.refuse(stream, Code.StreamRefused, "refused server stream: servers only open agent audio streams");
      return;
    }
    const codec = header.codec === "pcm16" || header.codec === "opus" ? header.codec : null;
    const responseId = header.response_id;
    if (!codec || responseId === void 0 || header.sample_rate !== SAMPLE_RATE) {
      this.refuse(stream, Code.BadStreamHeader, `refused server stream: bad header ${JSON.stringify(header)}`);
      return;
    }
    let r = this.reply(responseId);
    if (!r) {
      r = this.newReply(responseId, header.item_id, codec);
    } else if (r.codec !== codec && !done(r.state)) {
      this.push({ type: "playout_start", responseId, codec, startThresholdMs: this.config.startThresholdMs });
    }
    r.stream = stream;
    r.codec = codec;
    const entry = this.inbound.get(stream);
    if (entry) entry.reply = { responseId, codec };
    this.nextReport ??= now + this.reportInterval;
  }
  onReplyFrame(now, stream, pts, payload) {
    const info = this.inbound.get(stream)?.reply;
    if (!info) return;
    const r = this.reply(info.responseId);
    if (!r) return;
    const wireBytes = payload.length + FRAME_OVERHEAD;
    r.stats.bytesReceived += wireBytes;
    r.stats.framesReceived += 1;
    r.stats.firstFrameAt ??= now;
    if (r.stats.interrupt) {
      r.stats.interrupt.unplayedBytes += wireBytes;
      return;
    }
    if (done(r.state)) return;
    r.frames.push([pts, wireBytes]);
    const samples = info.codec === "pcm16" ? payload.length / 2 : SAMPLE_RATE * FRAME_MS / 1e3;
    r.receivedEnd = Math.max(r.receivedEnd, pts + samples);
    this.push({ type: "reply_frame", responseId: info.responseId, codec: info.codec, pts, payload });
  }
  onEvent(now, event) {
    switch (event.type) {
      case "session.created":
      case "session.updated":
      case "voq.session.resumed":
        this.reportInterval = Math.max(10, event.session.voq.played_report_interval_ms);
        this._session = event.session;
        if (this.nextPing === null && this.config.pingIntervalMs !== null) this.ping(now);
        break;
      case "voq.pong": {
        const sent = this.pingsInFlight.get(event.id);
        if (sent !== void 0) {
          this.pingsInFlight.delete(event.id);
          const sample = Math.max(0, now - sent);
          this._rttMs = this._rttMs === null ? sample : (7 * this._rttMs + sample) / 8;
        }
        break;
      }
      case "input_audio_buffer.committed": {
        const index = this._turns.findIndex((x) => x.itemId === event.item_id);
        const t = this._turns[index];
        if (t) {
          for (const [stream, i] of this.finished) if (i === index) this.finished.delete(stream);
          t.framesConfirmed = event.voq.frames;
          t.audioMsConfirmed = event.voq.audio_ms;
          t.bytesConfirmed = event.voq.bytes;
          t.confirmedAt = now;
        } else {
          this._turns.push({
            itemId: event.item_id,
            framesSent: 0,
            bytesSent: 0,
            audioMsSent: 0,
            framesDropped: 0,
            framesConfirmed: event.voq.frames,
            audioMsConfirmed: event.voq.audio_ms,
            bytesConfirmed: event.voq.bytes,
            confirmedAt: now
          });
        }
        break;
      }
      case "response.created":
        if (!this.reply(event.response.id)) {
          this.newReply(event.response.id, responseItemId(event.response), this.config.outputCodec);
        }
        break;
      case "response.done": {
        const r = this.reply(event.response.id);
        if (r) {
          r.stats.status = event.response.status;
          if (r.stream === null && !r.ended && event.response.status !== "completed" && !done(r.state)) {
            r.ended = true;
            this.push({ type: "playout_finish", responseId: r.stats.responseId });
          }
        }
        break;
      }
      case "conversation.item.truncated": {
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
    this.push({ type: "event", event });
  }
  report(now) {
    const r = this.replies[this.replies.length - 1];
    if (!r) {
      this.nextReport = null;
      return;
    }
    this.send({
      type: "output_audio_buffer.played",
      response_id: r.stats.responseId,
      played_ms: ms(r.played),
      buffered_ms: done(r.state) ? 0 : ms(r.buffered)
    });
    this.nextReport = done(r.state) ? null : now + this.reportInterval;
  }
};

// packages/client/src/client.ts
function microphoneConstraints(m) {
  const c = {};
  if (m.echoCancellation !== void 0) c.echoCancellation = m.echoCancellation;
  if (m.noiseSuppression !== void 0) c.noiseSuppression = m.noiseSuppression;
  if (m.autoGainControl !== void 0) c.autoGainControl = m.autoGainControl;
  return c;
}
var NETWORK_OUTPUTS = /* @__PURE__ */ new Set(["control", "open_stream", "stream_data", "finish_stream", "reset_stream", "stop_sending"]);
var VoqClient = class extends Emitter {
  opts;
  now;
  codecs;
  connectFn;
  audioIO;
  _session;
  reconnector;
  _state = "idle";
  conn = null;
  netQueue = [];
  inputCodec;
  outputCodec;
  mode;
  capturing = null;
  active = null;
  queue = [];
  decoders = /* @__PURE__ */ new Map();
  nextIn = 1;
  timer = null;
  pumping = false;
  totals = { turns: 0, frames: 0, bytes: 0, captured: 0 };
  lastResponse = null;
  /**
   * A resume asked for and not yet answered: the kept turns wait for `voq.session.resumed` to
   * learn what the server holds of them.
   */
  pendingResume = null;
  /** The server refused the last resume: the next new session starts afresh. */
  resumeRefused = false;
  connectMs = null;
  attempts = [];
  codecWarnings = [];
  /** With `keepCapturedAudio`: every turn begun, for {@link capturedAudio}. */
  kept = [];
  constructor(opts = {}) {
    super();
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.codecs = opts.codecs ?? browserCodecs;
    this.connectFn = opts.connect ?? connect;
    this.audioIO = opts.audio ?? null;
    this.mode = opts.mode ?? "push_to_talk";
    this.inputCodec = opts.inputCodec ?? opts.codec ?? "opus";
    this.outputCodec = opts.outputCodec ?? opts.codec ?? "opus";
    if (!opts.codecs) {
      const g = globalThis;
      if (this.inputCodec === "opus" && typeof g.AudioEncoder !== "function") {
        this.inputCodec = "pcm16";
        this.codecWarnings.push("this browser has no WebCodecs AudioEncoder: sending pcm16");
      }
      if (this.outputCodec === "opus" && typeof g.AudioDecoder !== "function") {
        this.outputCodec = "pcm16";
        this.codecWarnings.push("this browser has no WebCodecs AudioDecoder: receiving pcm16");
      }
    }
    this._session = this.newSession();
    const rc = { enabled: opts.reconnect !== false };
    if (opts.maxReconnectAttempts !== void 0) rc.maxAttempts = opts.maxReconnectAttempts;
    this.reconnector = new Reconnector(rc);
  }
  get state() {
    return this._state;
  }
  /** The session state machine of the current connection (turn and response details). */
  get session() {
    return this._session;
  }
  /** The server's description of the session, once it has sent `session.created`. */
  get serverSession() {
    return this._session.session;
  }
  /** The transport in use, if connected. */
  get transport() {
    return this.conn?.transport ?? null;
  }
  /**
   * Opens the microphone and the audio output and connects, all in parallel. Resolves when all
   * three are up; rejects with a {@link VoqError} (`mic_denied`, `unreachable`, `certificate`, …).
   * In server-VAD mode the continuous user stream starts here.
   */
  async start() {
    if (this._state !== "idle") throw new VoqError("invalid_state", `start() called in state ${this._state}`);
    this._state = "connecting";
    const conn = this.dial(false);
    for (const w of this.codecWarnings) this.emit("warning", { type: "warning", message: w });
    if (!this.opts.codecs && (this.inputCodec === "opus" || this.outputCodec === "opus")) {
      void opusSupport().then((can) => {
        if (this.inputCodec === "opus" && !can.encode || this.outputCodec === "opus" && !can.decode) {
          this.emit("warning", { type: "warning", message: 'WebCodecs reports no Opus support: the session may fail to encode or decode audio (use codec "pcm16")' });
        }
      });
    }
    if (!this.audioIO) {
      const o = {};
      if (this.opts.echoCancellationLoopback !== void 0) o.echoCancellationLoopback = this.opts.echoCancellationLoopback;
      if (this.opts.capture !== void 0) o.capture = this.opts.capture;
      if (this.opts.microphone !== void 0) o.constraints = microphoneConstraints(this.opts.microphone);
      this.audioIO = new BrowserAudio(o);
    }
    const audio = this.audioIO;
    if (this.mode === "server_vad") this.beginTurn(null, false);
    const capture = audio.startCapture((f) => this.onCaptureFrame(f));
    const playback = audio.startPlayback().then(() => {
      audio.player.onSnapshot = (s) => this.onSnapshot(s);
    });
    const all = Promise.allSettled([capture, playback, conn]);
    const micFailure = await Promise.race([
      capture.then(
        () => null,
        (e) => ({ reason: e })
      ),
      all.then(() => null)
    ]);
    const failed = micFailure ?? (await all).find((r) => r.status === "rejected");
    if (failed) {
      await this.close();
      throw failed.reason instanceof VoqError ? failed.reason : new VoqError("unsupported", String(failed.reason?.message ?? failed.reason), { cause: failed.reason });
    }
  }
  /**
   * Push-to-talk: starts a user turn. With `durationMs` the turn ends by itself after that much
   * captured audio. A turn still open is ended first.
   */
  startTurn(opts = {}) {
    if (this._state === "closed") throw new VoqError("invalid_state", "the client is closed");
    if (this.mode === "server_vad") throw new VoqError("invalid_state", "server VAD mode streams continuously: no turns to start");
    if (this.capturing) void this.endTurn();
    const limit = opts.durationMs !== void 0 ? Math.round(opts.durationMs * SAMPLE_RATE / 1e3) : null;
    this.beginTurn(limit, true);
  }
  /** Push-to-talk: ends the open turn (FIN once the encoder has drained); the server commits it. */
  async endTurn() {
    const t = this.capturing;
    if (!t) return;
    this.capturing = null;
    t.state = "flushing";
    try {
      await t.encoder.flush();
    } catch (e) {
      this.emit("warning", { type: "warning", message: `encoder flush failed: ${e.message}` });
    }
    t.state = "ended";
    t.encoder.close();
    if (this.active === t) this.finishTurn(t);
  }
  /** Whether a push-to-talk turn is capturing. */
  get talking() {
    return this.capturing !== null && this.mode === "push_to_talk";
  }
  /** Server VAD: end the current turn now (`input_audio_buffer.commit`). */
  commit() {
    this._session.commit();
    this.pump();
  }
  /** Discards the open turn (its stream is reset) and asks the server to clear its input. */
  clearInput() {
    const t = this.capturing;
    if (t && this.mode === "push_to_talk") {
      this.capturing = null;
      t.encoder.close();
      this.reconnector.turnDiscarded(t);
      this.queue = this.queue.filter((x) => x !== t);
      if (this.active === t) this.active = null;
    }
    this._session.clear();
    if (this.mode === "server_vad") this.beginTurn(null, false);
    this.activateNext();
    this.pump();
  }
  /** Asks the server to stop the response it is generating. */
  cancelResponse() {
    this._session.cancelResponse();
    this.pump();
  }
  /**
   * Barge-in: silences the output at once (the next audio quantum is silent), flushes the
   * playout, sends `conversation.item.truncate` with the exact position heard and STOP_SENDING
   * (`cancelled`) on the response stream. Resolves with the played ms, or `null` if nothing was
   * playing.
   */
  async interrupt() {
    const cur = this._session.currentResponse;
    if (!cur || !this.audioIO) return null;
    const id = cur.responseId;
    const f = await this.audioIO.player.flush(id);
    this.dropDecoder(id);
    const loopbackMs = this.audioIO.echoLoopback() === "active" ? this.audioIO.loopbackLatencyMs() ?? 0 : 0;
    const deviceMs = this.audioIO.outputLatencyMs?.() ?? 0;
    const behind = Math.round((loopbackMs + deviceMs) * 24);
    const heard = f.responseId === id ? Math.max(0, f.played - behind) : void 0;
    const ms2 = this._session.interrupt(this.now(), heard);
    if (ms2 !== null) this.emit("interrupted", { type: "interrupted", response_id: id, played_ms: ms2 });
    this.pump();
    return ms2;
  }
  /**
   * With the option `keepCapturedAudio`: the audio captured into the turn `itemId` (its current
   * id: a turn sent again after a reconnect has a new one) — the 24 kHz samples exactly as they
   * went into the encoder, as pcm16. With codec `pcm16` these are the payloads sent, so the
   * server's recording of the turn must equal them sample for sample; with Opus, the server
   * decodes something close. `null` without the option or for an unknown item. In server-VAD
   * mode the one continuous stream is one "turn" (the server's items are cut from it).
   */
  capturedAudio(itemId) {
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
  stats() {
    const r = this._session.currentResponse ?? this.lastResponse;
    const responses = this._session.responses;
    let framesReceived = 0;
    let bytesReceived = 0;
    for (const x of responses) {
      framesReceived += x.framesReceived;
      bytesReceived += x.bytesReceived;
    }
    const vadTurns = this.mode === "server_vad" ? this._session.turns.filter((t) => t.framesConfirmed !== void 0).length : 0;
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
      turnsSent: this.mode === "server_vad" ? vadTurns : this.totals.turns,
      framesSent: this.totals.frames,
      bytesSent: this.totals.bytes,
      capturedMs: Math.floor(this.totals.captured * 1e3 / SAMPLE_RATE),
      responses: responses.length,
      framesReceived,
      bytesReceived,
      echoLoopback: this.audioIO?.echoLoopback() ?? "off",
      loopbackLatencyMs: this.audioIO?.loopbackLatencyMs() ?? null,
      captureMethod: this.audioIO?.captureMethod?.() ?? null,
      connectMs: this.connectMs,
      reconnects: this.reconnector.reconnects,
      attempts: this.attempts
    };
  }
  /** Ends the session: closes the connection (code 0), the microphone and the audio output. */
  async close() {
    if (this._state === "closed") return;
    this._state = "closed";
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
    c?.transport.close(Code.NoError, "bye");
    await this.audioIO?.close().catch(() => {
    });
  }
  // ---- turns ----
  newSession(resume) {
    const cfg = {
      inputCodec: this.inputCodec,
      outputCodec: this.outputCodec,
      serverVad: this.mode === "server_vad"
    };
    if (this.opts.startThresholdMs !== void 0) cfg.startThresholdMs = this.opts.startThresholdMs;
    if (this.opts.sendAheadMs !== void 0) cfg.sendAheadMs = this.opts.sendAheadMs;
    if (resume) cfg.resume = resume;
    return new ClientSession(cfg);
  }
  beginTurn(limit, keep) {
    const t = {
      itemId: null,
      encoder: null,
      pending: [],
      keep,
      session: null,
      stopped: false,
      captured: 0,
      limit,
      state: "capturing",
      copy: this.opts.keepCapturedAudio ? [] : null
    };
    if (t.copy) this.kept.push(t);
    t.encoder = this.codecs.encoder(
      this.inputCodec,
      (payload, samples) => this.onPacket(t, payload, samples),
      (e) => this.emit("warning", { type: "warning", message: `audio encoder: ${e.message}` })
    );
    this.capturing = t;
    this.queue.push(t);
    this.activateNext();
  }
  activateNext() {
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
    this.emit("input.turn_started", { type: "input.turn_started", item_id: t.itemId });
    if (t.state === "ended") this.finishTurn(t);
    else this.pump();
  }
  finishTurn(t) {
    const s = t.session;
    if (s === this._session) s.endTurn(this.now());
    let stats = s?.turns.find((x) => x.itemId === t.itemId);
    const kept = this.pendingResume && t.keep ? this.reconnector.packetsOf(t) : null;
    if (kept) {
      let samples = 0;
      let bytes = 0;
      for (const [p, n] of kept) {
        samples += n;
        bytes += p.length;
      }
      stats = { framesSent: kept.length, audioMsSent: Math.floor(samples * 1e3 / 24e3), bytesSent: bytes };
    }
    this.queue = this.queue.filter((x) => x !== t);
    this.active = null;
    this.totals.turns += 1;
    if (t.keep) this.reconnector.turnEnded(t);
    this.emit("input.turn_ended", {
      type: "input.turn_ended",
      item_id: t.itemId ?? "",
      frames: stats?.framesSent ?? 0,
      audio_ms: stats?.audioMsSent ?? 0,
      bytes: stats?.bytesSent ?? 0
    });
    this.activateNext();
    this.pump();
  }
  onCaptureFrame(samples) {
    const t = this.capturing;
    if (!t || this._state === "closed") return;
    let frame = samples;
    if (t.limit !== null && t.captured + frame.length > t.limit) frame = frame.subarray(0, t.limit - t.captured);
    if (frame.length > 0) {
      t.captured += frame.length;
      this.totals.captured += frame.length;
      t.copy?.push(floatToPcm16(frame));
      t.encoder.encode(frame);
    }
    if (t.limit !== null && t.captured >= t.limit) void this.endTurn();
  }
  onPacket(t, payload, samples) {
    if (!t.stopped) {
      this.totals.frames += 1;
      this.totals.bytes += payload.length;
    }
    if (this.active !== t) {
      t.pending.push([payload, samples]);
      return;
    }
    if (t.session !== this._session) {
      if (this.pendingResume && t.keep && !t.stopped) this.reconnector.turnAudio(t, payload, samples);
      return;
    }
    this._session.sendAudio(this.now(), payload, samples);
    if (t.keep && !t.stopped) this.reconnector.turnAudio(t, payload, samples);
    this.pump();
  }
  // ---- connection ----
  async dial(reconnect) {
    const o = {};
    if (this.opts.url !== void 0) o.url = this.opts.url;
    if (this.opts.transport !== void 0) o.transport = this.opts.transport;
    if (this.opts.headStartMs !== void 0) o.headStartMs = this.opts.headStartMs;
    if (this.opts.timeoutMs !== void 0) o.timeoutMs = this.opts.timeoutMs;
    if (this.opts.token !== void 0) o.token = this.opts.token;
    if (this.opts.serverConfig !== void 0) o.config = this.opts.serverConfig;
    const r = await this.connectFn(o);
    if (this._state === "closed") {
      r.transport.close(Code.NoError, "client closed");
      return;
    }
    this.connectMs = r.connectMs;
    this.attempts = r.attempts;
    this.attach(r.transport);
    this.reconnector.handleConnected(this.now());
    this.emit("transport.connected", { type: "transport.connected", transport: r.winner, connectMs: r.connectMs, attempts: r.attempts, reconnect });
    this.pump();
  }
  attach(t) {
    const { send, recv } = t.openBidi();
    const conn = { transport: t, control: send, out: /* @__PURE__ */ new Map(), in: /* @__PURE__ */ new Map() };
    this.conn = conn;
    this._state = "connected";
    recv.onData = (b) => {
      if (this.conn !== conn) return;
      this._session.handleControl(this.now(), b);
      this.pump();
    };
    recv.onFin = () => this.lost(conn, "the server ended the control stream");
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
        if (code !== Code.Cancelled) this.emit("warning", { type: "warning", message: `the server reset an agent audio stream: ${codeName(code)}` });
        this._session.handleStreamReset(this.now(), id, code);
        this.pump();
      };
    };
    void t.closed.then((info) => {
      this.emit("transport.closed", { type: "transport.closed", transport: t.name, code: info.code, reason: info.reason, local: info.local });
      if (this.conn === conn) this.lost(conn, info.reason);
    });
    const q = this.netQueue;
    this.netQueue = [];
    for (const o of q) this.apply(o);
  }
  /** Lets go of `conn` (if it is the current one) and plays out what arrived on it. */
  drop(conn, reason) {
    if (this.conn !== conn) return false;
    this.conn = null;
    conn.transport.close(Code.NoError, reason);
    if (this._state === "closed") return false;
    const cur = this._session.currentResponse;
    if (cur && !this.mayResume()) this.finishPlayout(cur.responseId);
    return true;
  }
  /** Whether a lost connection is followed by a resume of the same session. */
  mayResume() {
    return this.opts.reconnect !== false && !this.resumeRefused && this._session.resumeToken !== null;
  }
  /** The connection is gone: the reconnector says what comes next. */
  lost(conn, reason) {
    if (!this.drop(conn, reason)) return;
    this.reconnector.handleLost(this.now(), reason);
    this.pump();
  }
  /**
   * A session for a new connection. Resumable: the same session, asked back with its token
   * (the kept turns wait for the answer, which says what the server holds of them; the reply
   * goes on). Otherwise a new session: the kept turns are sent again, whole, in order.
   */
  restartSession(turns) {
    this._state = "reconnecting";
    const last = this._session.currentResponse ?? this._session.responses[this._session.responses.length - 1] ?? null;
    if (last) this.lastResponse = last;
    this.netQueue = [];
    const old = this._session;
    const token = this.mayResume() ? old.resumeToken : null;
    if (token !== null) {
      const request = { token };
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
  startTurnsAgain(turns) {
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
  restartVadStream(now) {
    const a = this.active;
    if (a && !a.keep) {
      a.stopped = false;
      a.itemId = this._session.startTurn(now);
      a.session = this._session;
    }
  }
  act(a) {
    switch (a.type) {
      case "leave":
        if (this.conn) this.drop(this.conn, a.reason);
        break;
      case "replay":
        this.restartSession(a.turns);
        break;
      case "wait":
        this.emit("transport.reconnecting", { type: "transport.reconnecting", attempt: a.attempt, delayMs: a.delayMs, reason: a.reason });
        break;
      case "dial":
        this.dial(true).catch((e) => {
          this.reconnector.handleDialFailed(this.now(), e instanceof Error ? e.message : String(e));
          this.pump();
        });
        break;
      case "give_up": {
        const error = a.kind === "disabled" ? new ClosedError(`connection closed: ${a.reason}`) : new UnreachableError(`lost the connection and could not reconnect: ${a.reason}`);
        void this.close();
        this.emit("client.error", { type: "client.error", error });
        break;
      }
      case "forget":
        this.emit("warning", {
          type: "warning",
          message: `turn ${a.itemId} will not be sent again after a reconnect: more unconfirmed ${a.limit === "turns" ? "turns" : "audio"} than the client keeps`
        });
        break;
    }
  }
  // ---- the drain loop ----
  /** Drains both cores until neither has anything more, then sets the timer. */
  pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (; ; ) {
        const o = this._session.poll();
        if (o) {
          if (NETWORK_OUTPUTS.has(o.type) && !this.conn) this.netQueue.push(o);
          else this.apply(o);
          continue;
        }
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
  schedule() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const a = this._session.pollTimeout();
    const b = this.reconnector.pollTimeout();
    const at = a === null ? b : b === null ? a : Math.min(a, b);
    if (at === null || this._state === "closed") return;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        const now = this.now();
        this._session.handleTimeout(now);
        this.reconnector.handleTimeout(now);
        this.pump();
      },
      Math.max(0, at - this.now())
    );
  }
  apply(o) {
    const c = this.conn;
    switch (o.type) {
      case "control":
        c?.control.write(o.bytes);
        break;
      case "open_stream": {
        if (!c) break;
        const s = c.transport.openUni();
        s.onStop = (code) => {
          c.out.delete(o.stream);
          if (this.conn !== c) return;
          this._session.handleStreamStopped(this.now(), o.stream, code);
          this.pump();
        };
        c.out.set(o.stream, s);
        s.write(o.bytes);
        break;
      }
      case "stream_data":
        c?.out.get(o.stream)?.write(o.bytes);
        break;
      case "finish_stream":
        c?.out.get(o.stream)?.finish();
        c?.out.delete(o.stream);
        break;
      case "reset_stream":
        c?.out.get(o.stream)?.reset(o.code);
        c?.out.delete(o.stream);
        break;
      case "stop_sending":
        c?.in.get(o.stream)?.stop(o.code);
        c?.in.delete(o.stream);
        break;
      case "playout_start": {
        for (const [id2, d] of this.decoders) {
          if (id2 !== o.responseId) {
            d.close();
            this.decoders.delete(id2);
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
              (e) => this.emit("warning", { type: "warning", message: `audio decoder: ${e.message}` })
            )
          );
        } catch (e) {
          this.emit("warning", { type: "warning", message: e.message });
        }
        this.audioIO?.player.start(id, o.startThresholdMs);
        break;
      }
      case "reply_frame":
        this.decoders.get(o.responseId)?.decode(o.pts, o.payload);
        break;
      case "playout_finish":
        this.finishPlayout(o.responseId);
        break;
      case "playout_flush":
        this.dropDecoder(o.responseId);
        void this.audioIO?.player.flush(o.responseId);
        break;
      case "playback":
        this.onPlayback(o.change, o.responseId, o.playedMs, o.reason);
        break;
      case "turn_stopped": {
        const a = this.active;
        const resend = a?.keep === true && o.code === Code.GoingAway;
        if (a && a.session === this._session && a.itemId === o.itemId && !resend) a.stopped = true;
        this.reconnector.handleTurnStopped(o.itemId, o.code);
        this.emit("input.stream_stopped", { type: "input.stream_stopped", item_id: o.itemId, code: o.code, code_name: codeName(o.code) });
        break;
      }
      case "event":
        this.onServerEvent(o.event);
        break;
      case "problem":
        this.emit("warning", { type: "warning", message: o.message });
        break;
    }
  }
  finishPlayout(id) {
    const d = this.decoders.get(id);
    this.decoders.delete(id);
    const done2 = d ? d.flush().catch(() => {
    }) : Promise.resolve();
    void done2.then(() => {
      d?.close();
      this.audioIO?.player.finish(id);
    });
  }
  dropDecoder(id) {
    this.decoders.get(id)?.close();
    this.decoders.delete(id);
  }
  onPlayback(change, id, playedMs, reason) {
    const base = { response_id: id, played_ms: playedMs };
    if (change === "ended") {
      const last = this._session.responses.find((r) => r.responseId === id);
      if (last) this.lastResponse = last;
      this.emit("playback.ended", { type: "playback.ended", ...base, reason: reason ?? "finished" });
    } else {
      this.emit(`playback.${change}`, { type: `playback.${change}`, ...base });
    }
  }
  onSnapshot(s) {
    this._session.handlePlayout(this.now(), s);
    this.pump();
  }
  /**
   * The server took the session back: each kept turn goes on from what it holds (the rest on a
   * stream with the same item id; a turn it committed meanwhile is confirmed), new input
   * streams start for server VAD.
   */
  completeResume(state) {
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
        const [payload, samples] = r.packets[first++];
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
      this.finishPlayout(p.replyId);
    }
  }
  onServerEvent(e) {
    switch (e.type) {
      case "voq.session.resumed":
        this.resumeRefused = false;
        this.completeResume(e.voq);
        break;
      case "session.created": {
        this.resumeRefused = false;
        const p = this.pendingResume;
        if (p) {
          this.pendingResume = null;
          if (p.replyId !== null) this.finishPlayout(p.replyId);
          this.startTurnsAgain(p.turns);
        }
        break;
      }
      case "input_audio_buffer.committed":
        this.reconnector.handleCommitted(e.item_id);
        break;
      case "input_audio_buffer.speech_started":
        if (this.mode === "server_vad" && this.opts.interruptOnSpeech !== false && this._session.currentResponse) void this.interrupt();
        break;
      case "error":
        this.emit("warning", { type: "warning", message: `server error ${e.error.code}: ${e.error.message}` });
        if (e.error.code === "unauthorized" && this.pendingResume) {
          this.resumeRefused = true;
          if (this.pendingResume.replyId !== null) this.finishPlayout(this.pendingResume.replyId);
          this.pendingResume = null;
        }
        if (e.error.code === "going_away") this.reconnector.handleGoingAway(this.now());
        break;
      default:
        break;
    }
    this.emit(e.type, e);
  }
};

// demo/app.ts
var params = new URLSearchParams(location.search);
var $ = (id) => document.getElementById(id);
var t0 = performance.now();
var pageStartUnixMs = performance.timeOrigin + t0;
var events = [];
if (params.get("disable_webtransport") === "1") {
  window.WebTransport = void 0;
}
function toggle(id, param) {
  const box = $(id);
  const fromUrl = params.get(param);
  if (fromUrl === "0" || fromUrl === "1") box.checked = fromUrl === "1";
  return box.checked;
}
function embeddedConfig() {
  const text = document.getElementById("voq-config")?.textContent;
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
function choose(name, allowed) {
  const fromUrl = params.get(name);
  if (fromUrl && allowed.includes(fromUrl)) {
    const input = document.querySelector(`input[name="${name}"][value="${fromUrl}"]`);
    if (input) input.checked = true;
  }
  return document.querySelector(`input[name="${name}"]:checked`)?.value ?? allowed[0];
}
var client = null;
var starting = null;
function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}
function plainError(e) {
  if (e instanceof VoqError) {
    switch (e.code) {
      case "mic_denied":
        return "The microphone is blocked. Allow it for this page (the icon in the address bar) and try again.";
      case "mic_unavailable":
        return `No microphone could be opened. ${e.message}`;
      case "unreachable":
        return "Cannot reach the voq server. Is `voq serve` running? (Details in the event log.)";
      case "certificate":
        return "The secure (WebTransport) connection failed: the server's certificate did not match. Reload the page — a restarted server has a new certificate — or choose WebSocket. (Details in the event log.)";
      case "unsupported":
        return `This browser lacks something voq needs: ${e.message}`;
      case "closed":
        return `The connection closed: ${e.message}`;
      default:
        return e.message;
    }
  }
  return String(e?.message ?? e);
}
function showError(e) {
  setStatus(plainError(e), "error");
  if (e instanceof VoqError) log({ type: "client.error", error: e });
}
function summary(e) {
  switch (e.type) {
    case "session.created":
    case "session.updated":
      return `${e.session.id} via ${e.session.voq.transport}, ${e.session.audio.input.format.type}/${e.session.audio.output.format.type}, send-ahead ${e.session.voq.send_ahead_ms} ms`;
    case "input_audio_buffer.committed":
      return `${e.item_id}: ${e.voq.frames} frames, ${e.voq.audio_ms} ms, ${e.voq.bytes} bytes confirmed`;
    case "response.created":
      return e.response.id;
    case "response.done":
      return `${e.response.id} ${e.response.status}${e.response.voq ? `, ${e.response.voq.audio_ms_sent} ms sent` : ""}`;
    case "conversation.item.truncated":
      return `${e.item_id} at ${e.audio_end_ms} ms`;
    case "error":
      return `${e.error.code}: ${e.error.message}`;
    case "transport.connected":
      return `${e.transport} in ${e.connectMs} ms${e.attempts.length ? ` (${e.attempts.map((a) => `${a.transport} ${a.result}${a.error ? `: ${a.error}` : ""}`).join(", ")})` : ""}`;
    case "transport.closed":
      return `${e.transport}: ${e.reason}`;
    case "input.turn_started":
      return e.item_id;
    case "input.turn_ended":
      return `${e.item_id}: ${e.frames} frames, ${e.audio_ms} ms, ${e.bytes} bytes`;
    case "playback.started":
    case "playback.underrun":
    case "playback.resumed":
      return `${e.response_id} at ${e.played_ms} ms`;
    case "playback.ended":
      return `${e.response_id}: ${e.reason} at ${e.played_ms} ms`;
    case "interrupted":
      return `${e.response_id}: heard ${e.played_ms} ms`;
    case "warning":
      return e.message;
    case "client.error":
      return `${e.error.code}: ${e.error.message}`;
    default:
      return "";
  }
}
function log(e) {
  const entry = { t: Math.round(performance.now() - t0), type: e.type, event: e };
  events.push(entry);
  const li = document.createElement("li");
  const t = document.createElement("span");
  t.className = "t";
  t.textContent = `${(entry.t / 1e3).toFixed(3)}s`;
  li.append(t, `${e.type}  ${summary(e)}`);
  if (e.type === "warning") li.className = "warn";
  if (e.type === "error" || e.type === "client.error") li.className = "err";
  const ol = $("log");
  ol.append(li);
  while (ol.children.length > 300) ol.firstElementChild?.remove();
  ol.scrollTop = ol.scrollHeight;
}
function settingsLocked(locked) {
  for (const el of document.querySelectorAll(".settings input")) el.disabled = locked;
}
function makeClient() {
  const mode = choose("mode", ["push_to_talk", "server_vad"]);
  const codec = choose("codec", ["opus", "pcm16"]);
  const transport = choose("transport", ["auto", "webtransport", "websocket"]);
  const capture = params.get("capture");
  const serverConfig = params.get("config") === "fetch" ? null : embeddedConfig();
  const c = new VoqClient({
    mode,
    codec,
    transport,
    echoCancellationLoopback: params.get("aec") !== "0",
    microphone: {
      echoCancellation: toggle("mic-ec", "ec"),
      noiseSuppression: toggle("mic-ns", "ns"),
      autoGainControl: toggle("mic-agc", "agc")
    },
    keepCapturedAudio: params.get("keep_capture") === "1",
    ...capture === "worklet" || capture === "track-processor" ? { capture } : {},
    ...serverConfig ? { serverConfig } : {}
  });
  c.on("*", (e) => {
    if (e.type !== "voq.pong") log(e);
    onEvent(e);
  });
  $("talk").hidden = mode === "server_vad";
  $("commit").hidden = mode !== "server_vad";
  return c;
}
function onEvent(e) {
  const c = client;
  if (!c) return;
  switch (e.type) {
    case "transport.connected":
      setStatus(`Connected over ${e.transport === "webtransport" ? "WebTransport (QUIC)" : "WebSocket (TCP)"}. ${c.stats().mode === "server_vad" ? "Just talk." : "Hold Talk and speak."}`, "ok");
      break;
    case "transport.reconnecting":
      setStatus(`Connection lost (${e.reason}). Reconnecting… (attempt ${e.attempt}); your audio is kept.`);
      break;
    case "playback.started":
      setStatus("The agent is speaking. Interrupt to cut it off.", "ok");
      break;
    case "playback.ended":
      if (c.state === "connected") setStatus(e.reason === "interrupted" ? `Interrupted: you heard ${e.played_ms} ms.` : "Your turn.", "ok");
      break;
    case "error":
      if (e.error.code === "going_away") setStatus("The server is shutting down; moving to another one when this reply ends.");
      else setStatus(`The server reported: ${e.error.message}`, "error");
      break;
    case "client.error":
      setStatus(plainError(e.error), "error");
      break;
    default:
      break;
  }
}
async function ensureStarted() {
  if (client && starting) return starting;
  client = makeClient();
  window.voq.client = client;
  settingsLocked(true);
  setStatus("Connecting… (the microphone is already recording)");
  $("connect").textContent = "Hang up";
  const c = client;
  starting = c.start().catch(async (e) => {
    showError(e);
    await hangUp();
    throw e;
  });
  return starting;
}
async function hangUp() {
  const c = client;
  client = null;
  starting = null;
  $("connect").textContent = "Connect";
  $("talk").classList.remove("on");
  settingsLocked(false);
  if (c) {
    await c.close();
    if (!$("status").classList.contains("error")) setStatus("Not connected.");
  }
}
$("connect").addEventListener("click", () => {
  if (client) void hangUp();
  else void ensureStarted().catch(() => {
  });
});
var pressedAt = 0;
var latched = false;
function talkDown() {
  const talk2 = $("talk");
  if (latched) {
    latched = false;
    talkStop();
    return;
  }
  pressedAt = performance.now();
  const run = ensureStarted();
  run.catch(() => talk2.classList.remove("on"));
  client?.startTurn();
  talk2.classList.add("on");
  talk2.textContent = "Listening… release to send";
}
function talkUp() {
  if (!client?.talking) return;
  if (performance.now() - pressedAt < 300) {
    latched = true;
    $("talk").textContent = "Listening… click to send";
    return;
  }
  talkStop();
}
function talkStop() {
  const talk2 = $("talk");
  talk2.classList.remove("on");
  talk2.textContent = "Hold to talk";
  void client?.endTurn();
}
var talk = $("talk");
talk.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  talkDown();
});
talk.addEventListener("pointerup", talkUp);
talk.addEventListener("pointerleave", () => {
  if (!latched && client?.talking) talkStop();
});
window.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && !(e.target instanceof HTMLInputElement) && !$("talk").hidden) {
    e.preventDefault();
    if (!client?.talking) talkDown();
  }
});
window.addEventListener("keyup", (e) => {
  if (e.code === "Space" && !$("talk").hidden) {
    pressedAt = 0;
    talkUp();
  }
});
$("interrupt").addEventListener("click", () => void client?.interrupt());
$("commit").addEventListener("click", () => client?.commit());
for (const input of document.querySelectorAll('input[name="mode"]')) {
  input.addEventListener("change", () => {
    $("talk").hidden = input.value === "server_vad" && input.checked;
    $("commit").hidden = !$("talk").hidden;
  });
}
setInterval(() => {
  const s = client?.stats();
  const buffered = s?.bufferedMs ?? 0;
  $("buffer-bar").style.width = `${Math.min(100, buffered / 3e3 * 100)}%`;
  $("buffer-text").textContent = `${buffered} ms`;
  $("transport").textContent = s?.transport ?? "—";
  $("rtt").textContent = s?.rttMs != null ? `${s.rttMs.toFixed(1)} ms` : "—";
  $("played").textContent = s ? `${s.playedMs} ms` : "—";
  $("underruns").textContent = String(s?.underruns ?? 0);
  $("sent").textContent = s ? `${s.turnsSent} turns, ${(s.bytesSent / 1024).toFixed(1)} KiB` : "—";
  $("aec").textContent = s ? `${s.echoLoopback}${s.loopbackLatencyMs != null ? ` (+${s.loopbackLatencyMs} ms)` : ""}` : "—";
  $("interrupt").disabled = !client || !(s && s.bufferedMs + s.playedMs > 0 && client.session.currentResponse);
}, 100);
async function autostart() {
  const turnMs = Number(params.get("turn_ms") ?? 3e3);
  const deadline = Number(params.get("timeout_ms") ?? 6e4);
  const c = makeClient();
  client = c;
  window.voq.client = c;
  settingsLocked(true);
  setStatus("Autostart: connecting and speaking…");
  let turn = null;
  let response2 = null;
  const connectStartUnixMs = performance.timeOrigin + performance.now();
  window.voq.connectStartUnixMs = connectStartUnixMs;
  const run = async () => {
    const started = c.start();
    starting = started;
    if (c.stats().mode === "push_to_talk") {
      const ended = c.once("input.turn_ended");
      c.startTurn({ durationMs: turnMs });
      await started;
      turn = await ended;
    } else {
      await started;
    }
    const interruptAfter = params.get("interrupt_after_ms");
    if (interruptAfter !== null) {
      const playing = await c.once("playback.started");
      await new Promise((r) => setTimeout(r, Number(interruptAfter)));
      const truncated = c.once("conversation.item.truncated");
      const done2 = c.once("response.done");
      const heard = await c.interrupt();
      const [t, d] = await Promise.all([truncated, done2]);
      response2 = d;
      const interrupt = c.session.responses.find((r) => r.responseId === playing.response_id)?.interrupt ?? null;
      return { ok: heard !== null && t.audio_end_ms === heard && d.response.status === "cancelled", turn, response: response2, interrupt: { heard, truncated: t, stats: interrupt }, stats: c.stats() };
    }
    const duringReply = params.get("talk_during_reply_ms");
    if (duringReply !== null) {
      if (!events.some((x) => x.type === "playback.started")) await c.once("playback.started");
      const ended = c.once("input.turn_ended");
      c.startTurn({ durationMs: Number(duringReply) });
      const second = await ended;
      let committed = events.find((x) => x.type === "input_audio_buffer.committed" && x.event.item_id === second.item_id)?.event;
      while (!committed) {
        const e = await c.once("input_audio_buffer.committed");
        if (e.item_id === second.item_id) committed = e;
      }
      return { ok: true, turn, duringReply: { turn: second, committed }, stats: c.stats() };
    }
    response2 = await c.once("response.done");
    const id = response2.response.id;
    let playback = events.find((x) => x.type === "playback.ended" && x.event.response_id === id)?.event;
    while (!playback) {
      const e = await c.once("playback.ended");
      if (e.response_id === id) playback = e;
    }
    return { ok: response2.response.status === "completed", turn, response: response2, playback, stats: c.stats() };
  };
  const timeout = new Promise(
    (resolve) => setTimeout(() => resolve({ ok: false, error: { code: "timeout", message: `no complete call within ${deadline} ms` }, turn, response: response2, stats: c.stats() }), deadline)
  );
  try {
    const out = { ...await Promise.race([run(), timeout]), connectStartUnixMs };
    setStatus(out.ok ? "Autostart call complete." : `Autostart call failed: ${out.error?.message ?? "the response did not complete"}`, out.ok ? "ok" : "error");
    return out;
  } catch (e) {
    const stats = c.stats();
    showError(e);
    client = null;
    starting = null;
    $("connect").textContent = "Connect";
    settingsLocked(false);
    return { ok: false, error: { code: e?.code ?? "error", message: String(e?.message ?? e) }, turn, response: response2, stats, connectStartUnixMs };
  }
}
window.voq = {
  client: null,
  stats: () => client?.stats() ?? null,
  events,
  pageStartUnixMs,
  done: new Promise(() => {
  }),
  // A plain array: it crosses into the test (playwright's evaluate) as JSON.
  captured: (itemId) => {
    const pcm = window.voq.client?.capturedAudio(itemId);
    return pcm ? Array.from(pcm) : null;
  }
};
if (params.get("autostart") === "1") {
  $("connect").textContent = "Hang up";
  window.voq.done = autostart();
} else if (params.get("autostart") === "wait") {
  window.voq.done = new Promise((resolve) => {
    window.voq.go = () => {
      $("connect").textContent = "Hang up";
      resolve(autostart());
    };
  });
}
