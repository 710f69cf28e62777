#!/usr/bin/env node
import { exclusionConfig, injectionConfig, webhookSettings } from '../k8s/webhook/config.js';
import { kubeNamespaces } from '../k8s/webhook/kube-namespaces.js';
import { cachedNamespaces } from '../k8s/webhook/namespaces.js';
import { Mutator } from '../k8s/webhook/review.js';
import { startWebhookServer } from '../k8s/webhook/server.js';
import { createLogger } from '../util/log.js';
import { UsageError } from '../util/settings.js';
import { runMain } from './run-main.js';

await runMain({
  usage:
    'nsm-webhook [flags]\n\nKubernetes mutating admission webhook (AdmissionReview v1 on POST /mutate, GET /healthz). Pods annotated\n' +
    'ns.networkservicemesh.io (service[@domain][/ifname][?labels], comma separated) or networkservicemesh.io\n' +
    '(kernel://service[@domain][/ifname][?labels]) — or whose namespace is — get the nsc init container, the nsmd and\n' +
    'SPIFFE socket volumes and, with --sidecar, an `nsc --keep-alive` sidecar. Malformed annotations are denied with the reason.',
  settings: webhookSettings,
  async main({ values: v }) {
    let injection, exclusion;
    try {
      injection = injectionConfig(v);
      exclusion = exclusionConfig(v);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const log = createLogger('nsm-webhook', v.logLevel);
    const namespaces = cachedNamespaces(await kubeNamespaces({ kubeconfig: v.kubeconfig, timeoutMs: v.apiTimeout, log }), v.namespaceCacheTtl);
    const server = await startWebhookServer({
      listenOn: v.listenOn,
      certFile: v.certFile,
      keyFile: v.keyFile,
      reloadIntervalMs: v.certReloadInterval,
      mutator: new Mutator({ injection, exclusion, namespaces, log }),
      log,
    });
    return () => server.close();
  },
});
