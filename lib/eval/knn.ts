// k-nearest-neighbour classification as DINOv2 evaluates frozen features: L2-normalised features, cosine
// similarity, neighbours from the train split. The weighted vote gives each of the k neighbours the weight
// exp(similarity / 0.07) (DINOv2's temperature) and sums the weights per class; the majority vote counts them.
// Ties go to the lowest class index (classes are ordered by label sorted as strings).
import { cosineTopK, type TopK, type TopKOptions } from './topk.js';
import type { EvalBackend } from '../backends/types.js';

/** Search options plus the backend to search on (the native engine's libtorch, or js; default: the js search). */
export type SearchOptions = TopKOptions & { backend?: EvalBackend };

/** The cosine top-k on opts.backend, or the js backend's WebAssembly search when none is given. */
export function searchTopK(
  query: Float32Array,
  nq: number,
  base: Float32Array,
  nb: number,
  d: number,
  k: number,
  opts: SearchOptions = {},
): Promise<TopK> {
  const { backend, ...rest } = opts;
  return backend ? backend.cosineTopK(query, nq, base, nb, d, k, rest) : cosineTopK(query, nq, base, nb, d, k, rest);
}

export type KnnVote = 'weighted' | 'majority';

/** DINOv2's kNN temperature (dinov2/eval/knn.py, T = 0.07). */
export const KNN_TEMPERATURE = 0.07;

export interface KnnPrediction {
  /** [n] predicted class index. */
  pred: Int32Array;
  /** [n, nClasses] class scores: summed weights (weighted) or counts (majority) over the k neighbours. */
  scores: Float64Array;
}

/** Votes over the first k neighbours of each query (top.k >= k). */
export function knnVote(top: TopK, yTrain: Int32Array, nClasses: number, k: number, vote: KnnVote): KnnPrediction {
  if (k > top.k) throw new Error(`knnVote: k ${k} > searched ${top.k}`);
  const n = top.idx.length / top.k;
  const pred = new Int32Array(n);
  const scores = new Float64Array(n * nClasses);
  for (let i = 0; i < n; i++) {
    const so = i * nClasses;
    for (let t = 0; t < k; t++) {
      const j = top.idx[i * top.k + t];
      if (j < 0) break;
      scores[so + yTrain[j]] += vote === 'weighted' ? Math.exp(top.sim[i * top.k + t] / KNN_TEMPERATURE) : 1;
    }
    let best = 0;
    for (let c = 1; c < nClasses; c++) if (scores[so + c] > scores[so + best]) best = c;
    pred[i] = best;
  }
  return { pred, scores };
}

/**
 * kNN predictions for several k at once (one search for the largest k).
 * train [nTrain, d], test [nTest, d] row-major float32.
 */
export async function knnClassify(
  train: Float32Array,
  nTrain: number,
  yTrain: Int32Array,
  test: Float32Array,
  nTest: number,
  d: number,
  nClasses: number,
  ks: number[],
  vote: KnnVote,
  opts: SearchOptions = {},
): Promise<Map<number, KnnPrediction>> {
  const kMax = Math.min(Math.max(...ks), nTrain);
  const top = await searchTopK(test, nTest, train, nTrain, d, kMax, opts);
  const out = new Map<number, KnnPrediction>();
  for (const k of ks) out.set(k, knnVote(top, yTrain, nClasses, Math.min(k, kMax), vote));
  return out;
}
