import { WeftError } from '@weft/core';

/** Stable codes of @weft/subnet. */
export const SubnetErrorCode = {
  /** The network config is not JSON, or a field breaks one of flannel's rules. */
  badConfig: 'ERR_CONFIG_INVALID',
  /** No network config in the store. */
  noConfig: 'ERR_CONFIG_MISSING',
  /** Every subnet between SubnetMin and SubnetMax is leased. */
  noFreeSubnet: 'ERR_SUBNET_NONE_FREE',
  /** Racing nodes kept taking the subnets this one picked. */
  tooManyRetries: 'ERR_SUBNET_RETRIES',
  /** A lease value in the store is not flannel's JSON. */
  badLease: 'ERR_SUBNET_BAD_LEASE',
  /** The embedded store's file is truncated or corrupt. */
  corruptStore: 'ERR_STORE_CORRUPT',
  /** The store cannot be reached (etcd down, lock not obtained). */
  unavailable: 'ERR_STORE_UNAVAILABLE',
  /** A store's options are inconsistent, or name files that cannot be read (etcd TLS). */
  storeOptions: 'ERR_STORE_OPTIONS',
  /** subnet.env could not be read or written. */
  subnetFile: 'ERR_SUBNET_FILE',
} as const;

/** A config error naming the field and the rule it breaks. */
export function configError(field: string, rule: string): WeftError {
  return new WeftError(SubnetErrorCode.badConfig, `network config: ${field} ${rule}`);
}
