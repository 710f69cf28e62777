// A DNS server that answers badly on purpose, for the resolver's failure paths: run as
// `node faulty-dns.mjs HOST PORT TARGET_IP`; prints "ready" once it serves UDP and TCP on HOST:PORT.
//   *.servfail.test   SERVFAIL
//   *.nxdomain.test   NXDOMAIN
//   *.trunc.test      UDP: truncated (TC) and empty; TCP: the connection is closed without an answer
//   *.big.test        UDP: 200 SRV records in one oversized datagram, no TC
//   *.malformed.test  UDP and TCP: our id, then bytes that do not decode
//   _nsm._tcp.noadd.test  SRV t.noadd.test:5001 without additional records; A t.noadd.test = TARGET_IP
// Everything else: NXDOMAIN.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';

const [host, portText, targetIp] = process.argv.slice(2);
const port = Number(portText);
const SERVFAIL = 2;
const NXDOMAIN = 3;

function answer(query, tcp) {
  const q = query.questions[0];
  const base = { type: 'response', id: query.id, questions: query.questions, flags: dnsPacket.AUTHORITATIVE_ANSWER };
  const name = q.name.toLowerCase();
  if (name.endsWith('.malformed.test')) {
    const garbage = Buffer.from([0, 0, 0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0, 0xc0, 0xff, 0xff]);
    garbage.writeUInt16BE(query.id, 0);
    return garbage;
  }
  if (name.endsWith('.servfail.test')) return dnsPacket.encode({ ...base, flags: base.flags | SERVFAIL });
  if (name.endsWith('.trunc.test')) return tcp ? null : dnsPacket.encode({ ...base, flags: base.flags | dnsPacket.TRUNCATED_RESPONSE });
  if (name.endsWith('.big.test') && q.type === 'SRV') {
    const answers = Array.from({ length: 200 }, (_, i) => ({ type: 'SRV', name: q.name, ttl: 30, data: { priority: 0, weight: 1, port: 5000 + i, target: `t${i}.big.test` } }));
    return dnsPacket.encode({ ...base, answers });
  }
  if (name === '_nsm._tcp.noadd.test' && q.type === 'SRV') {
    return dnsPacket.encode({ ...base, answers: [{ type: 'SRV', name: q.name, ttl: 30, data: { priority: 0, weight: 1, port: 5001, target: 't.noadd.test' } }] });
  }
  if (name === 't.noadd.test' && q.type === 'A') {
    return dnsPacket.encode({ ...base, answers: [{ type: 'A', name: q.name, ttl: 30, data: targetIp }] });
  }
  if (name === 't.noadd.test') return dnsPacket.encode(base);
  return dnsPacket.encode({ ...base, flags: base.flags | NXDOMAIN });
}

const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
udp.on('message', (msg, rinfo) => {
  let query;
  try {
    query = dnsPacket.decode(msg);
  } catch {
    return;
  }
  const out = answer(query, false);
  if (out) udp.send(out, rinfo.port, rinfo.address);
});

const tcp = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('error', () => {});
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
    let query;
    try {
      query = dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
    } catch {
      sock.destroy();
      return;
    }
    const out = answer(query, true);
    if (!out) return sock.destroy();
    const len = Buffer.alloc(2);
    len.writeUInt16BE(out.length);
    sock.end(Buffer.concat([len, out]));
  });
});

udp.bind(port, host, () => tcp.listen(port, host, () => process.stdout.write('ready\n')));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
