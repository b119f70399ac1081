// Audio in the browser: the microphone through an AudioWorklet (PCM, no container the
// server cannot read), WAV and PCM16 encoding, files decoded when the server cannot.

// what the server decodes as it is (libsndfile): sent untouched; anything else is decoded
// here and sent as WAV
const SERVER_READS = /\.(wav|flac|mp3|ogg|oga|opus|aiff?)$/i;

export function wavBytes(samples, rate) {
  const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((c, i) => out.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  out.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  out.setUint32(16, 16, true);
  out.setUint16(20, 1, true); // PCM
  out.setUint16(22, 1, true); // mono
  out.setUint32(24, rate, true);
  out.setUint32(28, rate * 2, true);
  out.setUint16(32, 2, true);
  out.setUint16(34, 16, true);
  text(36, "data");
  out.setUint32(40, samples.length * 2, true);
  pcm16Into(samples, out, 44);
  return new Uint8Array(out.buffer);
}

function pcm16Into(samples, view, offset) {
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(offset + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
}

export function pcm16(samples) {
  const view = new DataView(new ArrayBuffer(samples.length * 2));
  pcm16Into(samples, view, 0);
  return new Uint8Array(view.buffer);
}

export function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function concat(chunks) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Float32Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

// an audio file as the bytes to send and their format ("wav" when decoded here)
export async function fileForServer(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (SERVER_READS.test(file.name)) {
    const ext = file.name.split(".").pop().toLowerCase();
    return { bytes, format: { oga: "ogg", aif: "aiff" }[ext] || ext };
  }
  const ctx = new OfflineAudioContext(1, 1, 16000);
  let decoded;
  try {
    decoded = await ctx.decodeAudioData(bytes.buffer.slice(0));
  } catch {
    throw new Error(`${file.name}: this browser cannot decode it, and the server reads only WAV, FLAC, MP3, Ogg and AIFF`);
  }
  const rate = 16000;
  const offline = new OfflineAudioContext(1, Math.max(1, Math.ceil(decoded.duration * rate)), rate);
  const src = offline.createBufferSource();
  src.buffer = decoded;
  src.connect(offline.destination);
  src.start();
  const rendered = await offline.startRendering();
  return { bytes: wavBytes(rendered.getChannelData(0), rate), format: "wav" };
}

// The microphone: start() asks for it; onChunk(Float32Array) gets PCM at `rate` Hz as it
// comes; stop() gives everything recorded (when `keep`).
export class Microphone {
  constructor(rate, keep, onChunk) {
    this.rate = rate;
    this.keep = keep;
    this.onChunk = onChunk;
    this.chunks = [];
    this.frames = 0;
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("this browser gives no microphone to this page (it needs http://127.0.0.1 or https)");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      throw new Error(`the microphone could not be opened: ${err.message || err.name}`);
    }
    // the context runs at the rate wanted: the browser resamples the microphone to it
    this.ctx = new AudioContext({ sampleRate: this.rate });
    await this.ctx.audioWorklet.addModule("/ui/capture-worklet.js");
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "qaudio-capture");
    this.node.port.onmessage = (e) => {
      this.frames += e.data.length;
      if (this.keep) this.chunks.push(e.data);
      if (this.onChunk) this.onChunk(e.data);
    };
    this.source.connect(this.node);
    // keep the graph pulled without playing anything back
    const mute = this.ctx.createGain();
    mute.gain.value = 0;
    this.node.connect(mute).connect(this.ctx.destination);
    await this.ctx.resume();
  }

  get seconds() {
    return this.frames / this.rate;
  }

  async stop() {
    if (this.node) this.node.port.onmessage = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) await this.ctx.close();
    return concat(this.chunks);
  }
}
