/**
 * What crosses a wire, seen from a test: DF pings sized to an MTU, and tcpdump captures read back as packets.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { execIn, type Netns } from './netns.js';
import { waitFor } from './wait.js';

/** One echo request with DF set (no fragmentation anywhere) carrying `payload` bytes. */
export async function pingDf(from: Netns | string, addr: string, payload: number): Promise<{ ok: boolean; out: string }> {
  const v6 = addr.includes(':');
  const r = await execIn(from, ['ping', v6 ? '-6' : '-4', '-c', '1', '-W', '2', '-M', 'do', '-s', String(payload), addr], { reject: false });
  return { ok: r.exitCode === 0, out: `${String(r.stdout)}\n${String(r.stderr)}` };
}

export interface Packet {
  /** Set for unfragmented IPv4 UDP and TCP. */
  udp?: { sport: number; dport: number; payload: Buffer };
  tcp?: { sport: number; dport: number; payload: Buffer };
  raw: Buffer;
}

/** Reads a classic pcap file (Ethernet link type) as written so far; a torn last record is skipped. */
export function readPcap(file: string): Packet[] {
  const buf = readFileSync(file);
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error(`not a little-endian pcap file (magic ${magic.toString(16)})`);
  const linkType = buf.readUInt32LE(20);
  if (linkType !== 1) throw new Error(`link type ${linkType}, expected Ethernet`);
  const out: Packet[] = [];
  let o = 24;
  while (o + 16 <= buf.length) {
    const incl = buf.readUInt32LE(o + 8);
    if (o + 16 + incl > buf.length) break;
    const raw = buf.subarray(o + 16, o + 16 + incl);
    o += 16 + incl;
    const pkt: Packet = { raw };
    let eth = 12;
    let type = raw.readUInt16BE(eth);
    if (type === 0x8100) {
      eth += 4;
      type = raw.readUInt16BE(eth);
    }
    const ip = eth + 2;
    if (type === 0x0800 && raw.length >= ip + 20) {
      const ihl = ((raw[ip] as number) & 0x0f) * 4;
      const proto = raw[ip + 9];
      const fragOffset = raw.readUInt16BE(ip + 6) & 0x1fff;
      const l4 = ip + ihl;
      if (proto === 17 && fragOffset === 0 && raw.length >= l4 + 8) {
        pkt.udp = { sport: raw.readUInt16BE(l4), dport: raw.readUInt16BE(l4 + 2), payload: raw.subarray(l4 + 8) };
      }
      if (proto === 6 && fragOffset === 0 && raw.length >= l4 + 20) {
        const dataOffset = ((raw[l4 + 12] as number) >> 4) * 4;
        pkt.tcp = { sport: raw.readUInt16BE(l4), dport: raw.readUInt16BE(l4 + 2), payload: raw.subarray(l4 + dataOffset) };
      }
    }
    out.push(pkt);
  }
  return out;
}

export interface Capture {
  /** The packets written so far. */
  packets(): Packet[];
  /** Stops tcpdump and returns every packet it wrote; removes the file. Idempotent. */
  stop(): Promise<Packet[]>;
}

/**
 * tcpdump on `iface` inside `ns` with a capture filter, writing to a private file; resolves once tcpdump
 * says it is listening, so nothing sent after that is missed.
 */
export async function startCapture(ns: Netns | string, iface: string, filter: string[]): Promise<Capture> {
  const name = typeof ns === 'string' ? ns : ns.name;
  const dir = mkdtempSync(join(tmpdir(), 'nsmesh-cap-'));
  const file = join(dir, 'capture.pcap');
  // -Z root: tcpdump would otherwise drop to its own user before writing the file. --immediate-mode and -U: take
  // each packet off the ring and write it at once; otherwise what arrived in the last buffer timeout before
  // stop() is counted by the kernel but never written.
  const proc = execa('ip', ['netns', 'exec', name, 'tcpdump', '-i', iface, '-n', '--immediate-mode', '-U', '-s', '0', '-Z', 'root', '-w', file, ...filter], { reject: false });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  let final: Packet[] | undefined;
  const stop = async () => {
    if (final) return final;
    proc.kill('SIGINT');
    await proc;
    try {
      final = readPcap(file);
    } catch {
      final = [];
    }
    rmSync(dir, { recursive: true, force: true });
    return final;
  };
  try {
    await waitFor(`tcpdump on ${iface} in ${name} to listen`, () => {
      if (proc.exitCode !== null) throw new Error(`tcpdump exited: ${err}`);
      return err.includes('listening on');
    }, 10_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { packets: () => (final ?? readPcap(file)), stop };
}
