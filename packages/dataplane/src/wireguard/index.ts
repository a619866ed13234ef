export { WireguardBackend, type WireguardBackendOptions, type WireguardNode } from './backend.js';
export {
  DEFAULT_TIMERS,
  WgCounter,
  WireguardEngine,
  type WireguardEngineOptions,
  type WireguardPeerConfig,
  type WireguardPeerStatus,
  type WireguardSink,
  type WireguardTimers,
} from './engine.js';
export {
  formatKey,
  generatePrivateKey,
  loadOrCreateKeyFile,
  parseKey,
  publicKeyOf,
  WireguardErrorCode,
} from './keys.js';
