import path from 'node:path';
import { z } from 'zod';
import { ifnameProblem } from '../../src/api/validate.js';
import { isValidBase64Key, parseEndpoint } from '../../src/dataplane/wireguard/index.js';
import { cidrProblem, loadConfigFile } from '../../src/endpoint/config-file.js';

const cidr = z.string().superRefine((s, ctx) => {
  const p = cidrProblem(s);
  if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: p });
});

const configSchema = z
  .object({
    tunnel: z
      .object({
        /** The WireGuard device's name in the gateway's namespace. */
        interface: z.string().default('wg-intranet').superRefine((s, ctx) => {
          const p = ifnameProblem(s);
          if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `interface name "${s}": ${p}` });
        }),
        /** The gateway's own address inside the tunnel; what the intranet sees client traffic come from. */
        address: cidr,
        listenPort: z.number().int().min(1).max(65535).default(51820),
        /** base64, as `wg genkey` writes it; relative to this file. */
        privateKeyFile: z.string().min(1),
        mtu: z.number().int().min(1280).max(9000).default(1420),
        peer: z
          .object({
            publicKey: z.string().refine(isValidBase64Key, 'a WireGuard public key: 44 characters of base64'),
            /** The intranet's VPN concentrator, ip:port or [ipv6]:port. */
            endpoint: z.string().superRefine((s, ctx) => {
              try {
                parseEndpoint(s);
              } catch (e) {
                ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
              }
            }),
            /** Sources the tunnel accepts from the concentrator; default: the intranet prefixes. */
            allowedIps: z.array(cidr).min(1).optional(),
          })
          .strict(),
      })
      .strict(),
    /** Prefixes of the intranet: routed into the tunnel and handed to clients as routes. */
    intranetPrefixes: z.array(cidr).min(1),
  })
  .strict();

export type VpnGatewayConfig = z.infer<typeof configSchema>;
export const VPN_CONFIG_SHAPE =
  '{tunnel: {interface?, address: cidr, listenPort?, privateKeyFile, mtu?, peer: {publicKey, endpoint: "ip:port", allowedIps?: [cidr]}}, intranetPrefixes: [cidr]}';

export function loadVpnGatewayConfig(file: string): VpnGatewayConfig {
  const cfg = loadConfigFile(file, configSchema, VPN_CONFIG_SHAPE);
  cfg.tunnel.privateKeyFile = path.resolve(path.dirname(file), cfg.tunnel.privateKeyFile);
  return cfg;
}
