/** The fields RFC 2782 ordering looks at; anything else is carried through untouched. */
export interface Weighted {
  priority: number;
  weight: number;
}

/** Returns a number in [0, 1), like Math.random; injectable so that tests can be seeded. */
export type Rng = () => number;

/**
 * Orders SRV records as RFC 2782 asks clients to try them: ascending priority, and within one priority a
 * weighted random permutation. Zero-weight records go first in the running sum so that they are picked only
 * when the random draw is exactly 0 — the RFC's "very small chance" — unless every record has weight 0, in
 * which case the choice among them is uniform.
 */
export function orderByRfc2782<T extends Weighted>(records: readonly T[], rng: Rng = Math.random): T[] {
  const byPriority = new Map<number, T[]>();
  for (const r of records) {
    const group = byPriority.get(r.priority);
    if (group) group.push(r);
    else byPriority.set(r.priority, [r]);
  }
  const out: T[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const remaining = byPriority.get(priority)!;
    while (remaining.length > 0) {
      const zero = remaining.filter((r) => r.weight === 0);
      const positive = remaining.filter((r) => r.weight > 0);
      const list = [...shuffle(zero, rng), ...positive];
      const total = list.reduce((s, r) => s + r.weight, 0);
      const chosen = total === 0 ? list[0]! : pickBySum(list, Math.floor(rng() * (total + 1)));
      out.push(chosen);
      remaining.splice(remaining.indexOf(chosen), 1);
    }
  }
  return out;
}

function pickBySum<T extends Weighted>(list: T[], draw: number): T {
  let sum = 0;
  for (const r of list) {
    sum += r.weight;
    if (sum >= draw) return r;
  }
  return list[list.length - 1]!;
}

function shuffle<T>(items: T[], rng: Rng): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
