// The publish page's microphone tap: an AudioWorkletProcessor that turns the capture's float samples
// (any rate, first channel) into 16 kHz mono PCM16LE, the protocol's audio format, and posts it to
// the page in chunks of `chunkMs` (default 100 ms) as transferable ArrayBuffers.
//
// Resampling is a streaming windowed-sinc low-pass interpolator (Blackman window, 16 taps a side,
// cut-off at 0.45 of the output rate): the same kind of filter as the Python client's resampler, so
// speech reaches the recogniser without aliasing. A capture already at 16 kHz passes straight through.

const TARGET_RATE = 16000;
const HALF_TAPS = 16;

class MicTap extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const chunkMs = options?.processorOptions?.chunkMs ?? 100;
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample
    this.cutoff = Math.min(1, 1 / this.ratio) * 0.9; // of the input's Nyquist frequency
    this.history = new Float32Array(0); // input samples not yet consumed (with the filter's margin)
    this.position = HALF_TAPS; // where the next output sample falls, in `history` samples
    this.chunk = new Int16Array(Math.round((TARGET_RATE * chunkMs) / 1000));
    this.filled = 0;
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
      if (event.data === "stop") {
        this.flush();
        this.stopped = true;
        this.port.postMessage("stopped"); // after the last samples: the page may send `end` now
      }
    };
  }

  kernel(distance) {
    if (Math.abs(distance) >= HALF_TAPS) return 0;
    const x = distance * this.cutoff;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const w = 0.42 + 0.5 * Math.cos((Math.PI * distance) / HALF_TAPS) + 0.08 * Math.cos((2 * Math.PI * distance) / HALF_TAPS);
    return this.cutoff * sinc * w;
  }

  push(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === this.chunk.length) this.flush();
  }

  flush() {
    if (!this.filled) return;
    const out = this.chunk.slice(0, this.filled);
    this.filled = 0;
    this.port.postMessage(out.buffer, [out.buffer]);
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0]?.[0];
    if (!input) return true;
    if (this.ratio === 1) {
      for (const sample of input) this.push(sample);
      return true;
    }
    const joined = new Float32Array(this.history.length + input.length);
    joined.set(this.history);
    joined.set(input, this.history.length);
    while (this.position + HALF_TAPS < joined.length) {
      const centre = Math.floor(this.position);
      let sum = 0;
      for (let k = centre - HALF_TAPS + 1; k <= centre + HALF_TAPS; k++) {
        sum += joined[k] * this.kernel(this.position - k);
      }
      this.push(sum);
      this.position += this.ratio;
    }
    const keepFrom = Math.max(0, Math.floor(this.position) - HALF_TAPS);
    this.history = joined.slice(keepFrom);
    this.position -= keepFrom;
    return true;
  }
}

registerProcessor("livecanvas-mic-tap", MicTap);
