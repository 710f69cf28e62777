import { writeFile } from 'node:fs/promises';

/**
 * An endpoint that routes between its interfaces (a firewall, a VPN gateway) needs forwarding on in its own
 * namespace; sysctls under /proc/sys/net belong to the namespace of the process that writes them. Turning it
 * off again on the way out makes a stopped endpoint forward nothing, whatever links are left.
 */
export async function setForwarding(on: boolean): Promise<void> {
  const v = on ? '1\n' : '0\n';
  await writeFile('/proc/sys/net/ipv4/ip_forward', v);
  try {
    await writeFile('/proc/sys/net/ipv6/conf/all/forwarding', v);
  } catch (e) {
    // A kernel or namespace without IPv6 has nothing to forward there.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
