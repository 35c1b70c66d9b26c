// The benchmarks' one flag reader: `--name value` from the command line, or the fallback.
/**
 * @template T
 * @param {string} name
 * @param {T} fallback
 * @returns {string | T}
 */
export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
