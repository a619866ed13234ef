#!/usr/bin/env node
import { fstatSync, readFileSync, readSync } from 'node:fs';
import { installPlugin } from './install.js';
import { ABOUT, runPlugin } from './plugin.js';

/**
 * weft-cni. As a CNI plugin (CNI_COMMAND set) it answers on stdout and exits 0 or 1. As a
 * command: `weft-cni install <bin dir> [name]` installs it (as `flannel` unless named), and with
 * no CNI_COMMAND it says what it is.
 */
function readStdin(): string {
  // A terminal (someone trying it by hand) has nothing to read; node:tty would cost startup time.
  if (fstatSync(0).isCharacterDevice()) return '';
  try {
    return readFileSync(0, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
  }
  // A non-blocking stdin (inherited that way): read until EOF, waiting a moment when it is empty.
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(65536);
  for (;;) {
    try {
      const n = readSync(0, buf);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}

const [sub, ...rest] = process.argv.slice(2);
if (sub === 'install') {
  if (!rest[0]) {
    process.stderr.write('usage: weft-cni install <CNI bin directory> [name, default flannel]\n');
    process.exitCode = 2;
  } else {
    process.stdout.write(`${installPlugin(rest[0], { name: rest[1] })}\n`);
  }
} else if (sub === '--help' || sub === '--version') {
  process.stdout.write(ABOUT);
} else {
  const response = runPlugin({ env: process.env, stdin: readStdin });
  if (response.stderr) process.stderr.write(response.stderr);
  process.stdout.write(response.stdout);
  process.exitCode = response.exitCode;
}
