// Log-probabilities of a row of logits: the CPU backend's `logprobs` op and the reference for
// wgsl/logprobs.wgsl. In float64: log_softmax(x)_i = x_i - (max + log Σ exp(x_j - max)).
import { logprobStride } from '../backend.ts';

/**
 * Writes logprobStride(top) values at out[at..]: `next` and its log-probability, then the `top`
 * most likely tokens as (id, log-probability), best first, the lower id first on ties.
 */
export function rowLogprobs(logits: Float32Array, next: number, top: number, out: Float32Array | Float64Array, at = 0): void {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logNormaliser = max + Math.log(sum);
  out[at] = next;
  out[at + 1] = logits[next] - logNormaliser;
  // A running list of the best `top`: one pass, no sort of the vocabulary.
  const best: number[] = [];
  if (top > 0) {
    for (let i = 0; i < logits.length; i++) {
      if (best.length === top && logits[i] <= logits[best[best.length - 1]]) continue;
      let place = best.length;
      while (place > 0 && logits[best[place - 1]] < logits[i]) place--;
      best.splice(place, 0, i);
      if (best.length > top) best.pop();
    }
  }
  for (let k = 0; k < top; k++) {
    const id = best[k];
    out[at + 2 + 2 * k] = id ?? -1;
    out[at + 3 + 2 * k] = id === undefined ? -Infinity : logits[id] - logNormaliser;
  }
}

/** The logprobs op over `rows` rows of `count` logits (kernels/backend.ts `logprobs`). */
export function logprobRows(out: Float32Array, logits: Float32Array, count: number, rows: number, nextTokens: Int32Array, sampled: Int32Array, top: number): void {
  const stride = logprobStride(top);
  for (let r = 0; r < rows; r++) {
    const next = nextTokens[r] < 0 ? sampled[r] : nextTokens[r];
    if (!(next >= 0 && next < count)) throw new RangeError(`logprobs row ${r}: token ${next} is outside the ${count} logits`);
    rowLogprobs(logits.subarray(r * count, (r + 1) * count), next, top, out, r * stride);
  }
}
