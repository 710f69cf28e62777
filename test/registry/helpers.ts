import { messageCodec, type DeepPartial } from '../../src/api/codec.js';
import type { NetworkService, NetworkServiceEndpoint } from '../../src/api/types.js';

export function nse(partial: DeepPartial<NetworkServiceEndpoint>): NetworkServiceEndpoint {
  return messageCodec('registry.NetworkServiceEndpoint').normalize(partial);
}

export function ns(partial: DeepPartial<NetworkService>): NetworkService {
  return messageCodec('registry.NetworkService').normalize(partial);
}

/** An endpoint offering `service` with `labels` under that service, as forwarders and NSEs register. */
export function endpoint(name: string, service: string, labels: Record<string, string> = {}): NetworkServiceEndpoint {
  return nse({
    name,
    network_service_names: [service],
    network_service_labels: { [service]: { labels } },
    url: `unix:///var/lib/networkservicemesh/${name}.sock`,
  });
}

/** Lets queued microtasks (watcher deliveries) run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
