/**
 * Echo cancellation for Web Audio output (see web/README.md, "Echo cancellation").
 *
 * Chrome's echo canceller (the one behind `getUserMedia({audio: {echoCancellation: true}})`) takes
 * its reference signal only from audio that WebRTC itself renders — remote tracks of a
 * RTCPeerConnection — not from Web Audio. Without help, the agent's voice played by the playout
 * worklet reaches the microphone again, and server VAD hears the agent as the user.
 *
 * The workaround: send the worklet's output through a local RTCPeerConnection pair (pc1 → pc2 in
 * the same page) and play pc2's remote track with an `<audio>` element. The canceller then sees
 * the signal as far-end audio and removes it from the microphone. The cost is an Opus encode
 * and a jitter buffer on loopback, ~40–80 ms of extra output latency.
 */

export interface Loopback {
  element: HTMLAudioElement;
  /** Measured jitter-buffer + decode delay of the loopback receiver (ms), when the browser reports it. */
  latencyMs(): Promise<number | null>;
  /** Mutes or unmutes the element (the barge-in mutes at once what the loopback still holds). */
  mute(on: boolean): void;
  close(): void;
}

/** Opus in the loopback: mono, no DTX, high bitrate (it never leaves the machine). */
function mungeSdp(sdp: string): string {
  return sdp.replace(/a=fmtp:(\d+) (.*useinbandfec=1.*)/g, (_m, pt: string, params: string) => {
    const p = params
      .split(';')
      .filter((x) => !/^(stereo|sprop-stereo|maxaveragebitrate|usedtx)=/.test(x.trim()))
      .concat(['stereo=0', 'maxaveragebitrate=128000', 'usedtx=0']);
    return `a=fmtp:${pt} ${p.join(';')}`;
  });
}

/** Plays `stream` through a local peer-connection loopback; rejects if it does not connect within `timeoutMs`. */
export async function startLoopback(stream: MediaStream, timeoutMs = 3000): Promise<Loopback> {
  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  const close = () => {
    pc1.close();
    pc2.close();
  };
  try {
    pc1.onicecandidate = (e) => {
      if (e.candidate) pc2.addIceCandidate(e.candidate).catch(() => {});
    };
    pc2.onicecandidate = (e) => {
      if (e.candidate) pc1.addIceCandidate(e.candidate).catch(() => {});
    };
    const track = stream.getAudioTracks()[0];
    if (!track) throw new Error('no audio track to loop back');
    pc1.addTrack(track, stream);
    const remote = new Promise<MediaStreamTrack>((resolve) => {
      pc2.ontrack = (e) => resolve(e.track);
    });
    const offer = await pc1.createOffer();
    const sdp = mungeSdp(offer.sdp ?? '');
    await pc1.setLocalDescription({ type: 'offer', sdp });
    await pc2.setRemoteDescription({ type: 'offer', sdp });
    const answer = await pc2.createAnswer();
    const asdp = mungeSdp(answer.sdp ?? '');
    await pc2.setLocalDescription({ type: 'answer', sdp: asdp });
    await pc1.setRemoteDescription({ type: 'answer', sdp: asdp });
    for (const r of pc2.getReceivers()) {
      // Ask for the smallest jitter buffer: nothing is lost or reordered on loopback.
      const rr = r as RTCRtpReceiver & { jitterBufferTarget?: number | null; playoutDelayHint?: number };
      try {
        rr.jitterBufferTarget = 0;
      } catch {
        // not supported
      }
    }
    const connected = new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pc2.connectionState === 'connected') resolve();
        else if (pc2.connectionState === 'failed' || pc2.connectionState === 'closed') reject(new Error(`loopback ${pc2.connectionState}`));
      };
      pc2.onconnectionstatechange = check;
      check();
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`loopback did not connect within ${timeoutMs} ms`)), timeoutMs);
    });
    const remoteTrack = await Promise.race([Promise.all([remote, connected]).then(([t]) => t), timeout]).finally(() => clearTimeout(timer));
    const element = new Audio();
    element.autoplay = true;
    element.srcObject = new MediaStream([remoteTrack]);
    await element.play().catch(() => {});
    return {
      element,
      mute(on) {
        element.muted = on;
      },
      async latencyMs() {
        const stats = await pc2.getStats();
        let out: number | null = null;
        stats.forEach((s: { type?: string; kind?: string; jitterBufferDelay?: number; jitterBufferEmittedCount?: number }) => {
          if (s.type === 'inbound-rtp' && s.kind === 'audio' && s.jitterBufferEmittedCount) {
            // Jitter buffer delay per sample, plus one 20 ms Opus frame of packetization.
            out = Math.round(((s.jitterBufferDelay ?? 0) / s.jitterBufferEmittedCount) * 1000 + 20);
          }
        });
        return out;
      },
      close() {
        element.pause();
        element.srcObject = null;
        close();
      },
    };
  } catch (e) {
    close();
    throw e;
  }
}
