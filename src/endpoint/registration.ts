import { ApiClient } from '../api/grpc.js';
import { messageCodec, type DeepPartial } from '../api/codec.js';
import type { NetworkServiceEndpoint } from '../api/types.js';
import { fromTimestamp } from '../chain/elements/expire.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Transport } from '../identity/transport.js';

const RETRY_MS = 1000;
const CALL_TIMEOUT_MS = 5000;

/**
 * Keeps an endpoint registered: registers, then renews at 2/3 of the lifetime the registry granted (as
 * upstream's registry refresh does), retrying every second while the registry is unreachable. Also
 * registers each served network service that does not exist yet, without touching ones that do (an
 * applied service's matches must not be overwritten by a bare registration).
 */
export class Registration {
  private readonly nseClient: ApiClient<'registry.NetworkServiceEndpointRegistry'>;
  private readonly nsClient: ApiClient<'registry.NetworkServiceRegistry'>;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  registered: NetworkServiceEndpoint | undefined;

  constructor(
    nsmdUrl: string,
    private readonly nse: DeepPartial<NetworkServiceEndpoint>,
    private readonly registerServices: { payload: string } | undefined,
    transport: Transport,
    private readonly log: Logger,
  ) {
    this.nseClient = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmdUrl, transport);
    this.nsClient = new ApiClient('registry.NetworkServiceRegistry', nsmdUrl, transport);
  }

  /** Resolves after the first successful registration, or rejects with the registry's answer. */
  async start(): Promise<NetworkServiceEndpoint> {
    await this.registerOnce();
    return this.registered!;
  }

  private async registerOnce(): Promise<void> {
    if (this.registerServices) {
      for (const name of this.nse.network_service_names ?? []) {
        const found = await this.nsClient.collect('Find', { network_service: { name: name! } }, { timeoutMs: CALL_TIMEOUT_MS });
        if (found.length === 0) {
          await this.nsClient.unary('Register', { name: name!, payload: this.registerServices.payload }, { timeoutMs: CALL_TIMEOUT_MS });
        }
      }
    }
    this.registered = await this.nseClient.unary('Register', this.nse, { timeoutMs: CALL_TIMEOUT_MS });
    const expires = fromTimestamp(this.registered.expiration_time) ?? Date.now() + 60_000;
    this.schedule(Math.max(100, ((expires - Date.now()) * 2) / 3));
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.registerOnce().catch((e: unknown) => {
        this.log.warn({ err: messageOf(e) }, 'registration renewal failed; retrying');
        this.schedule(RETRY_MS);
      });
    }, ms);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    try {
      if (this.registered) await this.nseClient.unary('Unregister', { name: this.registered.name }, { timeoutMs: 2000 });
    } catch (e) {
      this.log.warn({ err: messageOf(e) }, 'unregister failed; the registration will expire by itself');
    } finally {
      this.nseClient.close();
      this.nsClient.close();
    }
  }
}

export const nseDefaults = messageCodec('registry.NetworkServiceEndpoint').normalize;
