/** Parses upstream's label list form "key:value,key2:value2" (also accepting key=value). */
export function parseLabelList(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^:=]+)[:=](.*)$/.exec(part);
    if (!m) throw new Error(`label "${part}" is not key:value`);
    out[m[1]!.trim()] = m[2]!.trim();
  }
  return out;
}

export const parseList = (text: string): string[] => text.split(',').map((s) => s.trim()).filter(Boolean);
