/** The entries of `o` whose value is not undefined: spread over defaults, an explicit undefined does not erase one. */
export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
