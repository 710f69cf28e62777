import { createRtNetlink, FlagsNew, type RtNetlinkSocket } from 'netlink';
import { KernelParam } from '../../src/api/types.js';
import { afOf, maskBytes, parseCidr, parseIp, type Family } from '../../src/dataplane/ip.js';
import type { EndpointElement, Passthrough } from '../../src/endpoint/index.js';
import type { Logger } from '../../src/util/log.js';

/** Routing tables (and rule priorities) used for clients: one per client connection. */
const FIRST_TABLE = 1000;
const LAST_TABLE = 9999;
const RTNH_F_ONLINK = 4;

interface Installed {
  table: number;
  families: Family[];
  routes: { family: Family; dst: Buffer; dstLen: number }[];
}

/**
 * Sends each client's traffic out through that client's own onward link. nsmd routes the intranet through
 * whichever onward link asked for it first (a prefix has one route in the main table), so each client
 * connection gets a routing table of its own, chosen by the interface the client's packets arrive on:
 * closing one client's connections never reroutes — or cuts off — another's. The firewall runs in its own
 * namespace, so one netlink socket of its own reaches it.
 */
export class ClientRoutes {
  private readonly installed = new Map<string, Installed>();
  private sock: RtNetlinkSocket | undefined;

  constructor(
    private readonly passthrough: Passthrough,
    private readonly log: Logger,
  ) {}

  private socket(): RtNetlinkSocket {
    this.sock ??= createRtNetlink();
    return this.sock;
  }

  private allocate(): number {
    const used = new Set([...this.installed.values()].map((i) => i.table));
    for (let t = FIRST_TABLE; t <= LAST_TABLE; t++) if (!used.has(t)) return t;
    throw new Error(`more than ${LAST_TABLE - FIRST_TABLE + 1} client connections`);
  }

  private async install(id: string, clientIf: string): Promise<void> {
    const link = this.passthrough.linkOf(id);
    if (!link) throw new Error('client-routes runs after the passthrough');
    const s = this.socket();
    const inst: Installed = { table: this.allocate(), families: [], routes: [] };
    this.installed.set(id, inst);
    const [onward] = await s.getLink({}, { ifname: link.ifname });
    if (!onward?.data.index) throw new Error(`onward link ${link.ifname} is missing`);
    for (const prefix of link.prefixes) {
      const dst = parseCidr(prefix);
      const via = link.peerAddrs.map((a) => parseIp(a.split('/')[0]!)).find((a) => a?.family === dst.family);
      if (!via) continue;
      await s.newRoute(
        { family: afOf(dst.family), dstLen: dst.prefixLen, table: 0, protocol: 'STATIC', scope: 'UNIVERSE', type: 'UNICAST', flags: { __unknown: RTNH_F_ONLINK } },
        { dst: maskBytes(dst.bytes, dst.prefixLen), oif: onward.data.index, gateway: via.bytes, table: inst.table },
        { flags: FlagsNew.CREATE | FlagsNew.REPLACE },
      );
      inst.routes.push({ family: dst.family, dst: maskBytes(dst.bytes, dst.prefixLen), dstLen: dst.prefixLen });
      if (!inst.families.includes(dst.family)) inst.families.push(dst.family);
    }
    for (const f of inst.families) {
      await s.newRule({ family: afOf(f), action: 'toTbl' }, { iifname: clientIf, priority: inst.table, table: inst.table }, { flags: FlagsNew.CREATE | FlagsNew.EXCL });
    }
    this.log.debug({ conn: id, clientIf, onward: link.ifname, table: inst.table, prefixes: link.prefixes }, 'client routed through its onward link');
  }

  private async remove(id: string): Promise<void> {
    const inst = this.installed.get(id);
    if (!inst) return;
    this.installed.delete(id);
    const s = this.socket();
    // The onward link may be gone already, and its routes with it: each step is best effort.
    const steps = [
      ...inst.families.map((f) => s.delRule({ family: afOf(f), action: 'toTbl' }, { priority: inst.table, table: inst.table })),
      ...inst.routes.map((r) => s.delRoute({ family: afOf(r.family), dstLen: r.dstLen, table: 0 }, { dst: r.dst, table: inst.table })),
    ];
    await Promise.allSettled(steps);
  }

  element(): EndpointElement {
    return {
      name: 'client-routes',
      request: async (st, next) => {
        const conn = st.request.connection;
        const clientIf = conn.mechanism?.parameters[KernelParam.NAME];
        if (!clientIf) throw new Error('client-routes runs after the kernel mechanism');
        const fresh = !this.installed.has(conn.id);
        if (fresh) {
          try {
            await this.install(conn.id, clientIf);
          } catch (e) {
            await this.remove(conn.id);
            throw new Error(`routing client ${clientIf} through its onward link: ${(e as Error).message}`);
          }
        }
        try {
          return await next.request(st);
        } catch (e) {
          if (fresh) await this.remove(conn.id);
          throw e;
        }
      },
      close: async (st, next) => {
        try {
          await next.close(st);
        } finally {
          await this.remove(st.record.id);
        }
      },
    };
  }

  close(): void {
    this.sock?.socket.close();
    this.sock = undefined;
  }
}
