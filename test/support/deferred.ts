// A promise settled from outside: for tests that hold an operation at a chosen point (Promise.withResolvers
// arrives only in Node 22).
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}
