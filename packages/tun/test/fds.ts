import { readdirSync } from 'node:fs';

/** Open file descriptors of this process: a leak shows as a count that grows. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
