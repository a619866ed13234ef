#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { isWeftError } from '@weft/core';
import { type BackendOptions, createBackend } from './create.js';
import type { RemoteNode } from './nodes.js';

/**
 * weft-dataplane: runs one backend from a JSON config, for tests, benchmarks and experiments
 * (the node daemon, weftd, is what runs it in a cluster).
 *
 *   weft-dataplane '{"type":"udp","nodeAddress":"10.244.1.0","network":"10.244.0.0/16",
 *                    "nodes":[{"subnet":"10.244.2.0/24","publicIp":"198.18.0.2"}]}'
 *   weft-dataplane @config.json
 *
 * It prints `ready {"device":...}` once forwarding, `counters {...}` and `tables {...}` lines on
 * SIGUSR1 and at exit, and stops on SIGTERM or SIGINT.
 */
type Config = BackendOptions & { nodes?: RemoteNode[] };

function readConfig(arg: string | undefined): Config {
  if (!arg) {
    console.error('usage: weft-dataplane <json config> | @<file>');
    process.exit(2);
  }
  const text = arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg;
  return JSON.parse(text) as Config;
}

try {
  const config = readConfig(process.argv[2]);
  const backend = createBackend(config);
  backend.setNodes(config.nodes ?? []);
  const printCounters = () => {
    process.stdout.write(`counters ${JSON.stringify(backend.counters())}\n`);
    process.stdout.write(`tables ${JSON.stringify(backend.dumpTables())}\n`);
  };
  process.on('SIGUSR1', printCounters);
  const stop = () => {
    printCounters();
    backend.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(
    `ready ${JSON.stringify({ device: backend.deviceName, mtu: backend.mtu, port: backend.port, type: backend.type, offload: backend.offload })}\n`,
  );
} catch (err) {
  console.error(
    `weft-dataplane: ${isWeftError(err) ? `${err.code}: ` : ''}${(err as Error).message}`,
  );
  process.exit(1);
}
