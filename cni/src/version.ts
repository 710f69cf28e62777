import { CniCode, CniError } from './errors.js';

/**
 * Versions whose configuration and result formats this plugin reads and writes. They share one result shape
 * (interfaces, ips with an interface index, routes, dns); before 1.0.0 each IP also carried "version".
 */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export const CURRENT_VERSION = '1.0.0';

export function checkVersion(v: string): void {
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `cniVersion "${v}" is not supported by nsm-cni`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
}

/** Whether `v` is at least `min`; both are supported versions, compared numerically per component. */
export function atLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}
