import { test } from 'vitest';
import fs from 'node:fs';
import { createCa, issueSvid, verifySvid } from '../../src/identity/x509.js';
test('smoke', () => {
  const ca = createCa('example.org');
  const s = issueSvid(ca, 'spiffe://example.org/ns/a/pod/b', 3600_000);
  fs.writeFileSync('/tmp/ca.der', ca.certDer); fs.writeFileSync('/tmp/leaf.der', s.certDer);
  console.log(verifySvid(s.chainDer, new Map([['example.org', [ca.cert]]])));
});
