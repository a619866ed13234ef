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
 * It prints `ready {"device":...}` once forwarding, `counters {...}`, `tables {...}` and
 * `memory {...}` lines on SIGUSR1 and at exit, `fault {...}` if the device or socket is lost,
 * and stops on SIGTERM or SIGINT.
 */
type Config = BackendOptions & { nodes?: RemoteNode[] };

const USAGE = `usage: weft-dataplane '<json config>' | @<config file>

Runs one backend (udp or vxlan) from a JSON config: createBackend's options plus "nodes", e.g.
  weft-dataplane '{"type":"udp","nodeAddress":"10.244.1.0","network":"10.244.0.0/16","nodes":[{"subnet":"10.244.2.0/24","publicIp":"198.18.0.2"}]}'
Prints "ready {...}" once forwarding; "counters {...}" and "tables {...}" on SIGUSR1 and at exit;
stops on SIGTERM or SIGINT. The node daemon, weftd, is what runs a backend in a cluster.
`;

function readConfig(arg: string | undefined): Config {
  if (arg === '--help' || arg === '-h') {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (!arg) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  const text = arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg;
  try {
    return JSON.parse(text) as Config;
  } catch (err) {
    process.stderr.write(
      `weft-dataplane: the config is not JSON: ${(err as Error).message} (see weft-dataplane --help)\n`,
    );
    process.exit(2);
  }
}

try {
  const config = readConfig(process.argv[2]);
  const backend = createBackend(config);
  backend.setNodes(config.nodes ?? []);
  const printCounters = () => {
    process.stdout.write(`counters ${JSON.stringify(backend.counters())}\n`);
    process.stdout.write(`tables ${JSON.stringify(backend.dumpTables())}\n`);
    // Run with --expose-gc, the heap after a full collection: what the process really holds.
    (globalThis as { gc?: () => void }).gc?.();
    const { heapUsed, rss } = process.memoryUsage();
    process.stdout.write(`memory ${JSON.stringify({ heapUsed, rss })}\n`);
  };
  process.on('SIGUSR1', printCounters);
  backend.onFault((err) => {
    process.stdout.write(`fault ${JSON.stringify({ code: err.code, message: err.message })}\n`);
  });
  const stop = () => {
    printCounters();
    backend.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(
    `ready ${JSON.stringify({ device: backend.deviceName, mtu: backend.mtu, port: backend.port, type: backend.type, offload: backend.offload, workers: backend.workers })}\n`,
  );
} catch (err) {
  console.error(
    `weft-dataplane: ${isWeftError(err) ? `${err.code}: ` : ''}${(err as Error).message}`,
  );
  process.exit(1);
}
