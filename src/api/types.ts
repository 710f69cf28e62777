export * from './gen/types.js';
export type { DeepPartial } from './codec.js';

/** Mechanism constants, with upstream's exact strings. */
export const MechanismType = { KERNEL: 'KERNEL', VXLAN: 'VXLAN', WIREGUARD: 'WIREGUARD' } as const;
export const MechanismCls = { LOCAL: 'LOCAL', REMOTE: 'REMOTE' } as const;
export const KernelParam = { NAME: 'name', INODE_URL: 'inodeURL' } as const;
export const Payload = { IP: 'IP', ETHERNET: 'ETHERNET' } as const;
