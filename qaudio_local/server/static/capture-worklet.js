// Copies the microphone's first channel to the page, one 128-frame block at a time.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0] && input[0].length) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("qaudio-capture", Capture);
