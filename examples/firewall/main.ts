#!/usr/bin/env node
// nse-firewall: a passthrough endpoint. It serves a network service to clients and, for each client, requests
// the same service onward with its own labels (app=firewall), so the service's source selectors route that
// request on, to a VPN gateway in the seed's example. Between the client's interface and the onward one it
// forwards only what its nftables ruleset allows. Closing either side closes the other.
import { runMain } from '../../src/cli/run-main.js';
import { loadConfigFile } from '../../src/endpoint/config-file.js';
import { handRoutes, Passthrough, replaceNftTable, setForwarding, startEndpoint } from '../../src/endpoint/index.js';
import { endpointOptionsFrom, endpointSettings, labelsSetting, withDefault } from '../../src/endpoint/settings.js';
import { openTransport } from '../../src/identity/transport.js';
import { createLogger } from '../../src/util/log.js';
import { str } from '../../src/util/settings.js';
import { ClientRoutes } from './client-routes.js';
import { describeRule, FIREWALL_CONFIG_SHAPE, FIREWALL_TABLE, firewallConfigSchema, firewallRuleset } from './rules.js';

/** Client-facing and onward interface names start with these; the ruleset tells the two sides apart by them. */
const CLIENT_IF = 'fwc';
const ONWARD_IF = 'fwo';

const settings = {
  ...endpointSettings,
  name: withDefault(endpointSettings.name, 'firewall'),
  serviceNames: withDefault(endpointSettings.serviceNames, 'secure-intranet-connectivity'),
  labels: withDefault(endpointSettings.labels, 'app:firewall'),
  cidrPrefix: withDefault(endpointSettings.cidrPrefix, '169.254.64.0/18'),
  config: str('NSM_FIREWALL_CONFIG', 'firewall-config', '/etc/nsm/firewall.yaml', `firewall rules, YAML or JSON: ${FIREWALL_CONFIG_SHAPE}; default deny`),
  onwardLabels: withDefault(labelsSetting('NSM_ONWARD_LABELS', 'onward-labels', "labels of each onward request, seen by the service's source selectors, key:value,…"), 'app:firewall'),
};

await runMain({
  usage: 'nse-firewall [flags]\n\nA passthrough endpoint: requests the service onward for each client and filters what it forwards between the two with nftables.',
  settings,
  async main({ values: v }) {
    const log = createLogger(v.name, v.logLevel);
    const { rules } = loadConfigFile(v.config, firewallConfigSchema, FIREWALL_CONFIG_SHAPE);
    // The ruleset is in place before forwarding is on and before any client can connect.
    await replaceNftTable('inet', FIREWALL_TABLE, firewallRuleset(rules, { clients: CLIENT_IF, onward: ONWARD_IF }));
    await setForwarding(true);
    log.info({ rules: rules.map(describeRule), default: 'deny' }, 'firewall rules applied');
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: v.name, log });
    const passthrough = new Passthrough({
      name: v.name,
      connectTo: v.connectTo,
      transport,
      labels: v.onwardLabels,
      interfacePrefix: ONWARD_IF,
      ownPrefixes: v.cidrPrefix,
      maxTokenLifetimeMs: v.maxTokenLifetime,
      log,
    });
    const clientRoutes = new ClientRoutes(passthrough, log);
    const ep = await startEndpoint({
      ...endpointOptionsFrom(v, transport),
      interfacePrefix: CLIENT_IF,
      elements: (control) => [
        passthrough.element(control),
        clientRoutes.element(),
        handRoutes((st) => passthrough.linkOf(st.request.connection.id)?.prefixes ?? []),
      ],
      log,
    });
    return async () => {
      // Every client connection and its onward one close, and nothing is forwarded any more: no path around the rules is left.
      await ep.closeAll('firewall stopping');
      await ep.stop();
      passthrough.close();
      clientRoutes.close();
      const stuck = await setForwarding(false);
      if (stuck.length) log.warn({ sysctls: stuck }, 'forwarding stays on: /proc/sys is read-only here (the pod\'s links go with it)');
      transport.close();
    };
  },
});
