// The robustness index of PathoROB (de Jong et al. 2025): how much a representation's neighbourhoods follow
// biology (class) rather than the medical centre (site). Every sample of the evaluated set is a query; its k
// nearest neighbours by cosine on L2-normalised features come from the same set, excluding every sample of the
// query's own slide (so a slide cannot vouch for itself). Over all queries' k neighbours we count
//   SO same class, other site    OS other class, same site    SS same class, same site    OO other class, other site
// and report ratio = ΣSO / ΣOS (neutral at 1; the form G2L reports) and bounded = ΣSO / (ΣSO + ΣOS) in [0, 1].
import { UserError } from '../errors.js';
import { searchTopK, type SearchOptions } from './knn.js';

export interface RobustnessCounts {
  /** ΣSO / ΣOS; null when no neighbour had another class at the same site (ΣOS = 0). */
  ratio: number | null;
  bounded: number | null;
  SO: number;
  OS: number;
  SS: number;
  OO: number;
}

/** Integer codes for string values (first-seen order). */
export function codes(values: string[]): Int32Array {
  const map = new Map<string, number>();
  return Int32Array.from(values, (v) => {
    let c = map.get(v);
    if (c === undefined) map.set(v, (c = map.size));
    return c;
  });
}

/**
 * Robustness index for each k. x [n, d]; y class index, site and slide codes per row.
 */
export async function robustnessIndex(
  x: Float32Array,
  n: number,
  d: number,
  y: Int32Array,
  site: Int32Array,
  slide: Int32Array,
  ks: number[],
  opts: SearchOptions = {},
): Promise<Map<number, RobustnessCounts>> {
  const kMax = Math.max(...ks);
  const top = await searchTopK(x, n, x, n, d, kMax, { ...opts, queryGroup: slide, baseGroup: slide });
  for (let i = 0; i < n; i++) {
    if (top.idx[i * kMax + kMax - 1] < 0) {
      throw new UserError(
        `robustness index with k=${kMax}: a sample has fewer than ${kMax} neighbours outside its own slide; use smaller k (--robustness-k) or more slides`,
      );
    }
  }
  const out = new Map<number, RobustnessCounts>();
  for (const k of ks) {
    let SO = 0,
      OS = 0,
      SS = 0,
      OO = 0;
    for (let i = 0; i < n; i++) {
      for (let t = 0; t < k; t++) {
        const j = top.idx[i * kMax + t];
        const sameClass = y[j] === y[i];
        const sameSite = site[j] === site[i];
        if (sameClass && !sameSite) SO++;
        else if (!sameClass && sameSite) OS++;
        else if (sameClass) SS++;
        else OO++;
      }
    }
    out.set(k, { ratio: OS > 0 ? SO / OS : null, bounded: SO + OS > 0 ? SO / (SO + OS) : null, SO, OS, SS, OO });
  }
  return out;
}
