// How far a mistyped word is from the words it may stand for, and the one it most probably means.

/** Edits (insert, delete, replace, swap two neighbours) between two words. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The one of `words` (each listed once) at most two edits from `value` and nearer than every other, or undefined:
 * of two as near, either could be meant, so neither is offered.
 */
export function nearestWord<T extends string>(value: string, words: readonly T[]): T | undefined {
  let nearest: T | undefined;
  let best = 3;
  let tied = false;
  for (const word of words) {
    // Lengths more than two apart are more than two edits apart: a long value is not measured against each word.
    if (Math.abs(value.length - word.length) >= best) continue;
    const distance = editDistance(value, word);
    if (distance < best) [nearest, best, tied] = [word, distance, false];
    else if (distance === best) tied = true;
  }
  return tied ? undefined : nearest;
}
