#!/usr/bin/env node
// nse-vpn-gateway: an endpoint whose clients reach an intranet (a corporate network, an on-prem data centre)
// through a WireGuard tunnel to the intranet's VPN concentrator. It hands each client the intranet's routes
// (src_routes), never one that overlaps a prefix the client already uses (its excluded_prefixes).
import { runMain } from '../../src/cli/run-main.js';
import { acceptOnlyVia, handRoutes, overlaps, setForwarding, startEndpoint } from '../../src/endpoint/index.js';
import { endpointOptionsFrom, endpointSettings, listSetting, withDefault } from '../../src/endpoint/settings.js';
import { openTransport } from '../../src/identity/transport.js';
import { createLogger } from '../../src/util/log.js';
import { str } from '../../src/util/settings.js';
import { loadVpnGatewayConfig, VPN_CONFIG_SHAPE } from './config.js';
import { openTunnel } from './tunnel.js';

/** Client-facing interface names start with this; the gateway forwards only from them into the tunnel. */
const CLIENT_IF = 'vpn';

const settings = {
  ...endpointSettings,
  name: withDefault(endpointSettings.name, 'vpn-gateway'),
  serviceNames: withDefault(endpointSettings.serviceNames, 'secure-intranet-connectivity'),
  labels: withDefault(endpointSettings.labels, 'app:vpn-gateway'),
  cidrPrefix: withDefault(endpointSettings.cidrPrefix, '169.254.128.0/18'),
  config: str('NSM_VPN_CONFIG', 'vpn-config', '/etc/nsm/vpn-gateway.yaml', `tunnel and intranet, YAML or JSON: ${VPN_CONFIG_SHAPE}`),
  acceptVia: listSetting('NSM_ACCEPT_VIA', 'accept-via', [], 'SPIFFE ID globs of the hops (a firewall) clients must come through, comma separated; empty: any'),
};

await runMain({
  usage: 'nse-vpn-gateway [flags]\n\nAn endpoint that routes its clients into an intranet over a WireGuard tunnel and hands them the intranet routes.',
  settings,
  async main({ values: v }) {
    const log = createLogger(v.name, v.logLevel);
    const cfg = loadVpnGatewayConfig(v.config);
    if (v.acceptVia.length && v.insecure) throw new Error('NSM_ACCEPT_VIA needs identity (path tokens): it cannot be used with NSM_INSECURE');
    for (const pool of v.cidrPrefix) {
      const clash = [...cfg.intranetPrefixes, cfg.tunnel.address].find((p) => overlaps(p, pool));
      if (clash) throw new Error(`NSM_CIDR_PREFIX ${pool} overlaps ${clash} of the intranet: give clients addresses outside it`);
    }
    await setForwarding(true);
    let stopping: Promise<void> | undefined;
    let stop: () => Promise<void> = async () => {};
    const tunnel = await openTunnel(cfg, CLIENT_IF, log, (why) => {
      // Without its tunnel the gateway has nothing to offer: its clients' connections end and it exits, to be restarted.
      log.error({ why }, 'the tunnel to the intranet is gone; stopping');
      void stop().finally(() => process.exit(1));
    });
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: v.name, log });
    const ep = await startEndpoint({
      ...endpointOptionsFrom(v, transport),
      interfacePrefix: CLIENT_IF,
      elements: [...(v.acceptVia.length ? [acceptOnlyVia(v.acceptVia)] : []), handRoutes(() => cfg.intranetPrefixes)],
      log,
    });
    stop = () =>
      (stopping ??= (async () => {
        await ep.closeAll('vpn gateway stopping');
        await ep.stop();
        await tunnel.close();
        const stuck = await setForwarding(false);
        if (stuck.length) log.warn({ sysctls: stuck }, 'forwarding stays on: /proc/sys is read-only here (the pod\'s links go with it)');
        transport.close();
      })());
    return () => stop();
  },
});
