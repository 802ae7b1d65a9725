/** The bytes a guest test hashes: deterministic (xorshift32), so the plugin and the test make the same ones. */
export function guestInput(size: number, seed = 0x2545f491): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
