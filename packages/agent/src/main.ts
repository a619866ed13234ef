#!/usr/bin/env node
import { isWeftError } from '@weft/core';
import { parseNetworkConfig } from '@weft/subnet';
import { pino } from 'pino';
import { Daemon, openStore } from './daemon.js';
import { doctorMain } from './doctor/cli.js';
import { helpText, parseFlags } from './flags.js';
import { VERSION } from './http.js';

/**
 * weftd. Fatal errors print one line (`weftd: CODE: what to do`) and exit 1 (2 for a bad flag);
 * what the run set up is undone first.
 */
function fail(err: unknown, code = 1): never {
  const message = isWeftError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
  process.stderr.write(`weftd: ${message}\n`);
  process.exit(isWeftError(err, 'ERR_WEFTD_FLAG') ? 2 : code);
}

/** `weftd put-config JSON [store flags]`: the network config, checked, into the store the flags name. */
async function putConfig(args: string[]): Promise<void> {
  const [json, ...rest] = args;
  if (!json || json.startsWith('-'))
    throw new Error(
      'put-config needs the network config JSON, e.g. weftd put-config \'{"Network": "10.244.0.0/16"}\'',
    );
  const options = parseFlags(rest);
  parseNetworkConfig(json); // refuse a config the daemons would refuse
  const store = openStore(options);
  try {
    await store.putConfig(json);
  } finally {
    await store.close();
  }
  process.stdout.write(`network config written to ${store.description}\n`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.some((a) => ['--help', '-h', '-help'].includes(a))) {
    process.stdout.write(`${helpText()}\n`);
    return;
  }
  if (argv[0] === 'doctor') {
    const status = await doctorMain(argv.slice(1)).catch((err) => fail(err));
    process.exit(status);
  }
  if (argv[0] === 'put-config') {
    await putConfig(argv.slice(1)).catch((err) => fail(err));
    process.exit(0);
  }
  let options: ReturnType<typeof parseFlags>;
  try {
    options = parseFlags(argv);
  } catch (err) {
    fail(err);
  }
  if (options.version) {
    // flanneld prints its version alone, on stderr.
    process.stderr.write(`${VERSION}\n`);
    return;
  }
  const log = pino({ name: 'weftd', level: options.logLevel });
  const daemon = new Daemon(options, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await daemon.stop();
    process.exit(process.exitCode ?? 0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  void daemon.fatal.then((err) => fail(err));
  try {
    await daemon.start();
  } catch (err) {
    await daemon.abort();
    fail(err);
  }
}

void main();
