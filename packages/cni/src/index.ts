export { CniCode, CniError, type CniErrorResult } from './errors.js';
export { type ExecOutput, execPlugin, findPlugin } from './exec.js';
export { type InstallOptions, installPlugin, PLUGIN_MAIN } from './install.js';
export {
  checkDelegateOptions,
  DEFAULT_DATA_DIR,
  delegateConfig,
  type FlannelNetConf,
  parseNetConf,
} from './netconf.js';
export {
  ABOUT,
  type PluginRequest,
  type PluginResponse,
  runPlugin,
  STALE_ATTACHMENT,
} from './plugin.js';
export {
  argsFromEnv,
  type CniArgs,
  type CniCommand,
  LATEST_VERSION,
  SUPPORTED_VERSIONS,
} from './protocol.js';
export { IFNAME_KEY } from './records.js';
export {
  DEFAULT_SUBNET_FILE,
  type FlannelSubnetEnv,
  parseSubnetEnv,
  readSubnetEnv,
} from './subnet-env.js';
