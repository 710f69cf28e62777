import { readFile, writeFile } from 'node:fs/promises';

const SYSCTLS = ['/proc/sys/net/ipv4/ip_forward', '/proc/sys/net/ipv6/conf/all/forwarding'];

/**
 * An endpoint that routes between its interfaces (a firewall, a VPN gateway) needs forwarding on in its own
 * namespace; sysctls under /proc/sys/net belong to the namespace of the process that writes them. Turning it
 * off again on the way out makes a stopped endpoint forward nothing, whatever links are left.
 *
 * In a non-privileged container /proc/sys is read-only and the pod's own sysctls (set by the kubelet) are what
 * count: a value that is already right is left alone, and one that cannot be turned off on the way out is
 * reported to the caller instead of failing the shutdown.
 * Returns the sysctls that could not be set to `on`.
 */
export async function setForwarding(on: boolean): Promise<string[]> {
  const want = on ? '1' : '0';
  const stuck: string[] = [];
  for (const file of SYSCTLS) {
    let current: string;
    try {
      current = (await readFile(file, 'utf8')).trim();
    } catch (e) {
      // A kernel or namespace without IPv6 has nothing to forward there.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    if (current === want) continue;
    try {
      await writeFile(file, `${want}\n`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') throw e;
      if (on) throw new Error(`${file} is ${current} and read-only here: set the pod's sysctl net.ipv4.ip_forward / net.ipv6.conf.all.forwarding to 1 (or run with write access to /proc/sys)`);
      stuck.push(file);
    }
  }
  return stuck;
}
